"""Seed 001: U-Net with partial convolutions on 256x256 photos with random thick lines, MSE
loss, Adam. The seed used 8 classes of its own photos: point `--config.data.name=folder
--config.data.path=DIR` at yours; the default trains offline on the built-in `samples`.
Reported per image: MSE .0025-.0048, PSNR 23.2-26.1, SSIM .86-.93."""

from jaxpaint import defaults


def get_config():
  config = defaults.base_config()
  config.batch_size = 8
  config.image_size = 256
  config.num_train_steps = 20000
  config.learning_rate = 2e-4
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.eval_hole_ratio_bins = True
  config.data.name = "samples"
  config.data.num_eval_images = 200
  config.mask.kind = "lines"
  config.model = defaults.pconv_model_config()
  config.loss = defaults.pconv_loss_config()
  # The seed trained on plain MSE; the paper's loss is configs/pconv_celeba.py's.
  config.loss.update(valid=0.0, hole=0.0, tv=0.0, perceptual=0.0, style=0.0, mse=1.0)
  return config
