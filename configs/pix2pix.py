"""Seed 000: Pix2Pix (unet_256 + 70x70 PatchGAN, GAN + 100 L1) fills two random 75x75 boxes in
256x256 images. Adam 2e-4, beta1 0.5, constant for half the steps then linear decay to 0
(pix2pix's 100 + 100 epochs), batch 1 as in the paper, 286 -> 256 random crop + flip jitter.
Data: CelebA via TFDS (centre crop, resized) or `--config.data.name=folder --config.data.path=DIR`.
The seed reported "Kaggle MSE 0.23889" over the box pixels with its scale unstated; our eval's
`hole_mse` is that quantity on images in [-1, 1] (divide by 4 for [0, 1] images)."""

from jaxpaint import defaults
from jaxpaint.steps import pix2pix


def get_config():
  config = defaults.base_config()
  config.update(pix2pix.default_config())
  config.batch_size = 1
  config.image_size = 256
  config.num_train_steps = 200000
  config.optimizer.decay_start_step = config.num_train_steps // 2
  config.learning_rate = 2e-4
  config.log_every_steps = 100
  config.eval_every_steps = 10000
  config.checkpoint_every_steps = 10000
  config.data.name = "celeb_a"
  config.data.num_eval_images = 500
  config.mask.kind = "boxes"
  config.mask.num_boxes = 2
  config.mask.box_size = 75
  return config
