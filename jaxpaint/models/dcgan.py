"""DCGAN-style generator and discriminator (Radford et al. 2016), used as an LSGAN.

Seed 003 trains these as a Least Squares GAN (Mao et al. 2017) on 64x64 CelebA and then
inpaints by searching the generator's latent space (:mod:`jaxpaint.latent_search`).

* :class:`Generator`: z [B, latent_dim] -> dense -> 4x4x``base_features`` -> stride-2
  transposed convs that halve the features (1024 -> 512 -> 256 -> 128 at 64x64) -> C
  channels, tanh. BatchNorm + ReLU everywhere except the output layer.
* :class:`Discriminator`: ``num_layers`` stride-2 convs (64 -> 128 -> 256 -> 512),
  LeakyReLU 0.2, BatchNorm on all but the first, then a linear layer to one logit per
  image. At 64x64 the features entering the linear layer are 4x4x512 = 8192 values, as
  in the seed. No sigmoid: LSGAN regresses the raw output; vanilla GAN losses apply
  ``log_sigmoid`` to it.

Weights are initialised N(0, 0.02) as in DCGAN; BatchNorm uses DCGAN's momentum 0.9 and
epsilon 1e-5. ``dtype`` is the compute dtype (bfloat16 for mixed precision); parameters stay
float32 and both networks return float32, so losses and the latent search's z stay float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint import layers

_KERNEL_INIT = nn.initializers.normal(0.02)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _batch_norm(train: bool, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                      dtype=dtype)


def _num_upsamplings(image_size: int) -> int:
  """Transposed convs needed to grow 4x4 to image_size; raises on bad sizes."""
  if image_size < 8 or image_size & (image_size - 1):
    raise ValueError(
        f"Generator image_size must be a power of two >= 8 (e.g. 16, 32, 64); got {image_size}."
    )
  return image_size.bit_length() - 3  # log2(image_size / 4)


class Generator(nn.Module):
  """z [B, latent_dim] -> images [B, image_size, image_size, channels] in [-1, 1].

  Attributes:
    latent_dim: size of z (100 in DCGAN and seed 003).
    image_size: output height = width; a power of two >= 8.
    channels: output channels.
    base_features: features at 4x4; each upsampling halves them (never below 1).
    kernel_size: transposed-conv kernel, 4 (PyTorch DCGAN; divisible by the stride, so
      no checkerboard overlap) or 5 (TF DCGAN, Yeh et al.'s code).
    dtype: compute dtype; the output is float32.
  """

  latent_dim: int = 100
  image_size: int = 64
  channels: int = 3
  base_features: int = 1024
  kernel_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, train: bool) -> jax.Array:
    num_up = _num_upsamplings(self.image_size)
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"Generator expects z of shape [B, {self.latent_dim}]; got {z.shape}.")
    x = nn.Dense(4 * 4 * self.base_features, use_bias=False, kernel_init=_KERNEL_INIT,
                 dtype=self.dtype)(z)
    x = x.reshape(z.shape[0], 4, 4, self.base_features)
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    k = (self.kernel_size, self.kernel_size)
    for i in range(num_up - 1):
      features = max(self.base_features // 2 ** (i + 1), 1)
      x = layers.ConvTranspose(features, k, strides=(2, 2), padding="SAME", use_bias=False,
                               kernel_init=_KERNEL_INIT, dtype=self.dtype)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = layers.ConvTranspose(self.channels, k, strides=(2, 2), padding="SAME",
                             kernel_init=_KERNEL_INIT, dtype=self.dtype)(x)
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  """images [B, H, W, C] -> logits [B] (and optionally the features under the last layer).

  Attributes:
    base_features: features of the first conv; each later conv doubles them.
    num_layers: number of stride-2 convs (4 in DCGAN: 64x64 -> 4x4).
    kernel_size: conv kernel, 4 or 5.
    dtype: compute dtype; logits and features are returned as float32.
  """

  base_features: int = 64
  num_layers: int = 4
  kernel_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool, return_features: bool = False):
    """Scores images; higher = more real.

    Args:
      images: [B, H, W, C] in [-1, 1].
      train: batch statistics (True) or running averages (False) in BatchNorm.
      return_features: also return the last conv block's activations.

    Returns:
      logits [B]; with ``return_features``, ``(logits, features)`` where features
      [B, H / 2**num_layers, W / 2**num_layers, base_features * 2**(num_layers - 1)]
      (rounded up) is what the linear layer sees: VAE-GAN's feature-space similarity.
    """
    if images.ndim != 4:
      raise ValueError(f"Discriminator expects images [B, H, W, C]; got shape {images.shape}.")
    if self.num_layers < 1:
      raise ValueError(f"Discriminator num_layers must be >= 1; got {self.num_layers}.")
    x = images.astype(self.dtype)
    k = (self.kernel_size, self.kernel_size)
    for i in range(self.num_layers):
      # DCGAN: no BatchNorm on the first layer (it would normalise away the input colours).
      x = nn.Conv(self.base_features * 2**i, k, strides=(2, 2), padding="SAME", use_bias=i == 0,
                  kernel_init=_KERNEL_INIT, dtype=self.dtype)(x)
      if i > 0:
        x = _batch_norm(train, self.dtype)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
    logits = nn.Dense(1, kernel_init=_KERNEL_INIT, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    logits = logits[:, 0].astype(jnp.float32)
    if return_features:
      return logits, x.astype(jnp.float32)
    return logits
