"""Seed 002 on CIFAR-10 32x32 (see jaxpaint.defaults.seed002_unet_config). Reported: "SSIM"
0.8546, computed as (ssim + 1) / 2, i.e. a raw SSIM of 0.709."""

from jaxpaint import defaults


def get_config():
  return defaults.seed002_unet_config("cifar10", image_size=32)
