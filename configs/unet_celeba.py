"""Seed 004 model 1: U-Net on CelebA 64x64 (centre crop, resize), MSE, Adam, batch 128, a blank
square region per image, sigmoid output (rescaled to [-1, 1]). The seed reported no numbers."""

from jaxpaint import defaults
from jaxpaint.losses import reconstruction


def get_config():
  config = defaults.base_config()
  config.batch_size = 128
  config.image_size = 64
  config.num_train_steps = 20000
  config.learning_rate = 1e-3
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.data.name = "celeb_a"
  config.data.num_eval_images = 2000
  config.mask.kind = "boxes"
  config.mask.num_boxes = 1
  config.mask.box_size = 16
  config.mask.box_max_size = 32
  config.model = defaults.unet_model_config()
  config.model.update(features=64, depth=3, dropout_rate=0.0, output_activation="sigmoid")
  config.loss = reconstruction.default_config()
  return config
