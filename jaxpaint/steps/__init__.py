"""Train steps: one :class:`~jaxpaint.steps.base.Task` per model family, built from config.

Each family's module defines ``build_task(config, mask_fn, channels, previous) -> Task``;
modules are imported on demand, so a U-Net run never imports GAN code.
"""

import importlib

import jax.numpy as jnp
import ml_collections

from jaxpaint import masks as mask_lib
from jaxpaint.steps.base import Task

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.model.name -> the module whose build_task builds it.
TASK_MODULES = {
    "unet": "jaxpaint.steps.reconstruction",
    "pconv_unet": "jaxpaint.steps.reconstruction",
    "pix2pix": "jaxpaint.steps.pix2pix",
    "lsgan": "jaxpaint.steps.lsgan",
    "context_encoder": "jaxpaint.steps.context_encoder",
    "vaegan": "jaxpaint.steps.vaegan",
}


def compute_dtype(config: ml_collections.ConfigDict):
  """Activation dtype; parameters and optimiser state stay float32 (mixed precision)."""
  name = config.get("compute_dtype", "float32")
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={name!r}; choose one of {tuple(COMPUTE_DTYPES)}.")
  return COMPUTE_DTYPES[name]


def build_task(config: ml_collections.ConfigDict, channels: int, previous: dict | None = None) -> Task:
  """The task for ``config.model.name``, with masks drawn as ``config.mask`` says.

  ``previous`` maps earlier stages of a staged config to their final states (LSGAN's refiner
  stage inpaints with the trained GAN).
  """
  name = config.model.name
  if name not in TASK_MODULES:
    raise ValueError(f"config.model.name={name!r}; choose one of {tuple(TASK_MODULES)}.")
  mask_fn = mask_lib.make_mask_fn(config.mask, config.image_size, config.image_size)
  module = importlib.import_module(TASK_MODULES[name])
  return module.build_task(config, mask_fn, channels, previous or {})
