"""Seed 002 on MNIST 28x28 (see jaxpaint.defaults.seed002_unet_config). Reported: "SSIM"
0.8795, computed as (ssim + 1) / 2, i.e. a raw SSIM of 0.759."""

from jaxpaint import defaults


def get_config():
  return defaults.seed002_unet_config("mnist", image_size=28)
