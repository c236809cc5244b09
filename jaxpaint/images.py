"""Pixel-range conversions and compositing, the package's one place for them."""

import jax.numpy as jnp
import numpy as np


def to_float(images: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
  """uint8 [B, H, W, C] in [0, 255] -> float in [-1, 1]."""
  return images.astype(dtype) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
  """Float [..., H, W, C] in [-1, 1] -> uint8 in [0, 255] (host array, for PNGs)."""
  images = np.asarray(images, dtype=np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def apply_mask(images: jnp.ndarray, masks: jnp.ndarray, fill: float = 0.0) -> jnp.ndarray:
  """Blank the holes: images [B, H, W, C], masks [B, H, W, 1] (1 = known) -> [B, H, W, C]."""
  return images * masks + fill * (1.0 - masks)


def composite(known: jnp.ndarray, generated: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
  """Keep known pixels, take holes from ``generated``: m * x + (1 - m) * G."""
  return masks * known + (1.0 - masks) * generated
