"""U-Net inpainting autoencoder (seed 002: MNIST/CIFAR-10; seed 004 model 1: CelebA 64x64)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint import images as image_lib

OUTPUT_ACTIVATIONS = ("tanh", "sigmoid", "none")


def output_activation(x: jax.Array, name: str) -> jax.Array:
  """Maps logits to [-1, 1]; 'sigmoid' is seed 004's [0, 1] sigmoid rescaled to [-1, 1]."""
  if name == "tanh":
    return jnp.tanh(x)
  if name == "sigmoid":
    return 2.0 * jax.nn.sigmoid(x) - 1.0
  if name == "none":
    return x
  raise ValueError(f"output_activation={name!r}; choose one of {OUTPUT_ACTIVATIONS}.")


class ConvBlock(nn.Module):
  """``num_convs`` 3x3 convs, each with optional BatchNorm, then ReLU."""
  features: int
  num_convs: int = 2
  use_batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for _ in range(self.num_convs):
      x = nn.Conv(self.features, (3, 3), use_bias=not self.use_batch_norm, dtype=self.dtype)(x)
      if self.use_batch_norm:
        x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class UNet(nn.Module):
  """Encoder (conv blocks + 2x2 max-pool) -> bottleneck conv -> decoder (nearest x2, conv,
  concat skip, conv blocks) -> 3x3 conv to ``out_channels``.

  With ``depth=2, features=32, dropout_rate=0.2`` this is seed 002's network (32/64 encoder,
  128 bottleneck, tanh output). The input is the masked image concatenated with the mask.
  """
  out_channels: int
  features: int = 32
  depth: int = 2
  convs_per_level: int = 2
  dropout_rate: float = 0.2
  use_batch_norm: bool = False
  output_activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, masks: jax.Array, *, train: bool) -> jax.Array:
    """images [B, H, W, C] in [-1, 1] (holes are blanked here), masks [B, H, W, 1] -> [B, H, W, out_channels]."""
    height, width = images.shape[1:3]
    if height % 2**self.depth or width % 2**self.depth:
      raise ValueError(f"image size {height}x{width} is not divisible by 2**depth = {2**self.depth}; "
                       "change config.image_size or config.model.depth.")
    block = lambda f: ConvBlock(f, self.convs_per_level, self.use_batch_norm, self.dtype)
    x = jnp.concatenate([image_lib.apply_mask(images, masks), masks], axis=-1).astype(self.dtype)
    skips = []
    for level in range(self.depth):
      x = block(self.features * 2**level)(x, train=train)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = ConvBlock(self.features * 2**self.depth, 1, self.use_batch_norm, self.dtype)(x, train=train)
    for level in reversed(range(self.depth)):
      batch, h, w, c = x.shape
      x = jax.image.resize(x, (batch, 2 * h, 2 * w, c), method="nearest")
      x = ConvBlock(self.features * 2**level, 1, self.use_batch_norm, self.dtype)(x, train=train)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = block(self.features * 2**level)(x, train=train)
    x = nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(x)
    return output_activation(x.astype(jnp.float32), self.output_activation)
