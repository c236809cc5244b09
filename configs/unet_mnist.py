"""Seed 002 on MNIST: 2-level U-Net (32/64/128, dropout 0.2, tanh), MSE, Adam, centre 8x8 hole,
the first 1000 training images, batch 64, 100 epochs (~1600 steps). Reported: (ssim+1)/2 = 0.8795."""

from jaxpaint import defaults
from jaxpaint.losses import reconstruction


def get_config():
  config = defaults.base_config()
  config.batch_size = 64
  config.image_size = 28
  config.num_train_steps = 1600
  config.learning_rate = 1e-3   # Keras Adam default
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.data.name = "mnist"
  config.data.num_train_images = 1000
  config.data.num_eval_images = 10000
  config.mask.kind = "centre"
  config.mask.size = 8
  config.model = defaults.unet_model_config()
  config.loss = reconstruction.default_config()
  return config
