"""Seed 003's AutoEncoder refinement network for LSGAN completions.

The seed (LSGAN + AutoEncoder, CelebA 64x64) refines the latent-search completion with an
autoencoder trained by MSE against the ground truth, then keeps the known pixels:
``final = M * y + (1 - M) * AE(completion)`` (:func:`jaxpaint.images.composite`).

What the seed states, and how it is reproduced here:

* "Encoder, 4 levels, 1x8192": four levels of conv -> BatchNorm -> ReLU -> 2x2 max-pool
  ("convolutions ... followed by pooling ... ReLU"; max-pool and ReLU commute). With
  features (64, 128, 256, 512) a 64x64x3 input becomes 4x4x512 = 8192 values, which is
  the bottleneck (the seed's table prints "8092", its text says 8192).
* "Decoder, 4 levels, 64x64x3 ... by UpSampling": four levels of nearest x2 upsample ->
  conv -> BatchNorm -> ReLU with the encoder's features mirrored (256, 128, 64, 64),
  then a 3x3 conv to the image channels and tanh (images live in [-1, 1]).
* BatchNorm is used in the autoencoder (the seed: "to prevent ... overfitting"); there
  are no skip connections, so every detail passes through the 8192-value bottleneck.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class Refiner(nn.Module):
  """Convolutional autoencoder: [B, H, W, C] -> [B, H, W, channels] in [-1, 1].

  Attributes:
    features: encoder features per level; each level halves H and W, so H and W must be
      divisible by 2**len(features). The bottleneck is
      (H / 2**L) * (W / 2**L) * features[-1] values (8192 at 64x64 with the default).
    channels: output channels (3 for RGB).
    kernel_size: conv kernel size.
    dtype: compute dtype (parameters stay float32); the outputs are float32.
  """

  features: Sequence[int] = (64, 128, 256, 512)
  channels: int = 3
  kernel_size: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool, return_bottleneck: bool = False):
    """Refines images.

    Args:
      images: [B, H, W, C] in [-1, 1], e.g. latent-search completions.
      train: batch statistics (True) or running averages (False) in BatchNorm.
      return_bottleneck: also return the flattened code.

    Returns:
      refined [B, H, W, channels]; with ``return_bottleneck``, ``(refined, code)`` with
      code [B, bottleneck_size].
    """
    levels = len(self.features)
    if levels < 1:
      raise ValueError("Refiner needs at least one encoder level in `features`.")
    if images.ndim != 4:
      raise ValueError(f"Refiner expects images [B, H, W, C]; got shape {images.shape}.")
    _, height, width, _ = images.shape
    if height % 2**levels or width % 2**levels:
      raise ValueError(
          f"Refiner with {levels} levels needs H and W divisible by {2**levels}; got "
          f"{height}x{width}. Resize the images or use fewer `features`."
      )
    k = (self.kernel_size, self.kernel_size)

    def conv_bn_relu(x, feats):
      x = nn.Conv(feats, k, padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(x)
      return nn.relu(x)

    x = images.astype(self.dtype)
    for feats in self.features:
      x = conv_bn_relu(x, feats)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    code = x.reshape(x.shape[0], -1)

    decoder_features = tuple(reversed(self.features[:-1])) + (self.features[0],)
    for feats in decoder_features:
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest x2 upsampling
      x = conv_bn_relu(x, feats)
    x = nn.Conv(self.channels, k, padding="SAME", dtype=self.dtype)(x)
    refined = jnp.tanh(x).astype(jnp.float32)
    if return_bottleneck:
      return refined, code.astype(jnp.float32)
    return refined
