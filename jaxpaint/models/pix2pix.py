"""Pix2Pix networks (Isola et al. 2017): a U-Net generator and a PatchGAN discriminator.

Both follow junyanz/pytorch-CycleGAN-and-pix2pix with BatchNorm: 4x4 kernels, stride-2
convolutions with padding 1, LeakyReLU 0.2 in the encoder/discriminator, ReLU in the decoder,
weights N(0, 0.02), BatchNorm scale N(1, 0.02) and PyTorch's BatchNorm momentum 0.1 /
epsilon 1e-5. Convolutions carry a bias exactly where no BatchNorm follows (PyTorch also drops
it from the generator's first and innermost encoder convs; a bias there is harmless).

In train mode BatchNorm normalises over batch *and* space, so batch size 1 works (pix2pix
trains at batch 1).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint import images as image_lib
from jaxpaint import layers

_KERNEL_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, dtype: Any = jnp.float32) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here) and pix2pix's init."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=_bn_scale_init)


def down_conv(features: int, *, stride: int = 2, use_bias: bool, dtype: Any = jnp.float32) -> nn.Conv:
  """4x4 conv with padding 1: halves the size at stride 2 (H -> H / 2), H -> H - 1 at stride 1."""
  return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
                 use_bias=use_bias, kernel_init=_KERNEL_INIT, dtype=dtype)


def up_conv(features: int, *, use_bias: bool, dtype: Any = jnp.float32) -> layers.ConvTranspose:
  """PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)``: exactly doubles the size (H -> 2H).

  A transposed conv with PyTorch padding p pads the stride-dilated input by k - 1 - p = 2 on
  each side: (2H - 1) + 4 - 4 + 1 = 2H. ``transpose_kernel=True`` makes it the true
  adjoint of a stride-2 conv, as in PyTorch (kernel [kh, kw, out, in], spatially flipped).
  """
  return layers.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                              transpose_kernel=True, use_bias=use_bias, kernel_init=_KERNEL_INIT,
                          dtype=dtype)


class UNetGenerator(nn.Module):
  """Pix2Pix U-Net: (masked image, mask) -> [B, H, W, out_channels] in [-1, 1].

  Level i of ``num_downs`` has ``base_features * min(2**i, 8)`` features (64, 128, 256, 512,
  512, ... for unet_256 with ``num_downs=8``). Encoder level i: LeakyReLU (not on the input),
  4x4/s2 conv, BatchNorm (not on the first and innermost levels). Decoder level i, innermost
  first: ReLU, 4x4/s2 transposed conv to level i-1's features (``out_channels`` at the top),
  BatchNorm and then concatenation with the encoder's level-i-1 output; the top level ends in
  tanh. Dropout follows BatchNorm in the ``num_downs - 5`` decoder levels just outside the
  innermost one (three 512-feature blocks for unet_256), as in pix2pix.

  Attributes:
    out_channels: image channels produced.
    num_downs: stride-2 levels; H and W must be divisible by ``2**num_downs`` (8 -> 1x1
      bottleneck at 256x256).
    base_features: features of the first level (ngf, 64 in pix2pix).
    dropout_rate: dropout in the decoder levels named above (0.5 in pix2pix).
    dtype: activation dtype (parameters stay float32); the output is float32.
  """
  out_channels: int = 3
  num_downs: int = 8
  base_features: int = 64
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  def level_features(self, level: int) -> int:
    return self.base_features * min(2**level, 8)

  @nn.compact
  def __call__(self, images: jax.Array, masks: jax.Array, *, train: bool) -> jax.Array:
    """images [B, H, W, C] in [-1, 1] (holes blanked here), masks [B, H, W, 1] -> [B, H, W, out_channels]."""
    n = self.num_downs
    if n < 1:
      raise ValueError(f"UNetGenerator.num_downs must be >= 1, got {n}.")
    _, height, width, _ = images.shape
    if height % 2**n or width % 2**n:
      raise ValueError(
          f"UNetGenerator with num_downs={n} needs H and W divisible by 2**{n} = {2**n}; got "
          f"{height}x{width}. Change the image size or num_downs.")
    x = jnp.concatenate([image_lib.apply_mask(images, masks), masks], axis=-1).astype(self.dtype)

    skips = []
    for level in range(n):
      innermost = level == n - 1
      if level > 0:
        x = nn.leaky_relu(x, 0.2)
      normed = 0 < level < n - 1
      x = down_conv(self.level_features(level), use_bias=not normed, dtype=self.dtype)(x)
      if normed:
        x = batch_norm(train, self.dtype)(x)
      if not innermost:
        skips.append(x)

    for level in reversed(range(n)):
      x = nn.relu(x)
      if level == 0:
        x = up_conv(self.out_channels, use_bias=True, dtype=self.dtype)(x)
        return jnp.tanh(x).astype(jnp.float32)
      x = up_conv(self.level_features(level - 1), use_bias=False, dtype=self.dtype)(x)
      x = batch_norm(train, self.dtype)(x)
      if 4 <= level <= n - 2 and self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = jnp.concatenate([skips[level - 1], x], axis=-1)


class PatchDiscriminator(nn.Module):
  """PatchGAN: [B, H, W, C] -> one logit per overlapping patch, [B, h, w, 1].

  ``num_layers`` 4x4/s2 convs (``base_features * min(2**i, 8)`` features, BatchNorm on all
  but the first), a 4x4/s1 conv with ``base_features * min(2**num_layers, 8)`` features +
  BatchNorm, each followed by LeakyReLU 0.2, then a 4x4/s1 conv to one logit. With
  ``num_layers=3`` this is pix2pix's 70x70 PatchGAN: 30x30 logits at 256x256.

  Returns the logits and the activations after every LeakyReLU (for feature-matching
  losses such as VAE-GAN's); unused features cost nothing under jit.
  """
  base_features: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32

  @staticmethod
  def output_size(size: int, num_layers: int) -> int:
    """Logit map side for an input side ``size``."""
    for _ in range(num_layers):
      size = (size + 2 - 4) // 2 + 1
    return size - 2  # two stride-1 convs, each H -> H - 1

  @staticmethod
  def receptive_field(num_layers: int) -> int:
    """Input pixels seen by one logit along each axis (70 for ``num_layers=3``)."""
    field = 4  # the output conv
    field += 3  # the stride-1 conv before it
    for _ in range(num_layers):
      field = 2 * field + 2  # a 4x4 stride-2 conv: (r - 1) * 2 + 4
    return field

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """x [B, H, W, C] -> (logits [B, h, w, 1] float32, features)."""
    if self.num_layers < 1:
      raise ValueError(f"PatchDiscriminator.num_layers must be >= 1, got {self.num_layers}.")
    for size in x.shape[1:3]:
      if self.output_size(size, self.num_layers) < 1:
        raise ValueError(
            f"PatchDiscriminator with num_layers={self.num_layers} gives no logits for input "
            f"{x.shape[1]}x{x.shape[2]}; use fewer layers or larger images.")
    x = x.astype(self.dtype)
    features = []
    for i in range(self.num_layers + 1):
      stride = 2 if i < self.num_layers else 1
      x = down_conv(self.base_features * min(2**i, 8), stride=stride, use_bias=i == 0, dtype=self.dtype)(x)
      if i > 0:
        x = batch_norm(train, self.dtype)(x)
      x = nn.leaky_relu(x, 0.2)
      features.append(x)
    logits = down_conv(1, stride=1, use_bias=True, dtype=self.dtype)(x)
    return logits.astype(jnp.float32), tuple(features)
