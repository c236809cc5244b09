"""Context Encoders (Pathak et al. 2016): predict the centre patch from its surroundings.

Geometry (all centred): an image of size ``S x S`` has a predicted region of
``patch_size x patch_size`` (S/2 in the paper: 64 of 128); the hole is that region shrunk by
``overlap`` pixels on each side (56x56 in Pathak's code), so the generator also predicts a
thin ring of known pixels, which the loss weights x10 to make the fill blend in (see
:mod:`jaxpaint.losses.context_encoder`).

* :class:`ContextEncoder`: hole-filled image [B, S, S, C] -> stride-2 4x4 convs down to 4x4
  (64, 64, 128, 256, 512 at S = 128; BatchNorm on all but the first; LeakyReLU 0.2) -> a 4x4
  valid conv to a ``bottleneck``-d code (4000 in the paper; BatchNorm + LeakyReLU) -> 4x4
  transposed convs, valid to 4x4x512 then stride 2 to 256, 128, 64 (BatchNorm + ReLU) and
  C -> tanh patch [B, patch_size, patch_size, C]. The depths follow from S and
  ``patch_size`` (S = 64, patch 32 is the same network one level shallower at each end).
* :class:`ContextDiscriminator`: judges the patch alone (Pathak's default, conditionAdv=0):
  stride-2 4x4 convs down to 4x4 then a 4x4 valid conv to one logit per image.

Weights are initialised as in Pathak's (DCGAN) code: kernels N(0, 0.02), BatchNorm scale
N(1, 0.02); BatchNorm momentum 0.9 (Torch's 0.1). The reference code zeroes every conv bias
each step; here convs followed by BatchNorm simply have no bias.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint import images as image_lib
from jaxpaint import layers

# Pathak's train.lua fills the hole with the ImageNet mean colour (117, 104, 123) / 255,
# mapped to [-1, 1]. Pass it as ``mean_colour`` to reproduce the reference exactly.
PATHAK_MEAN_COLOUR = (2 * 117 / 255 - 1, 2 * 104 / 255 - 1, 2 * 123 / 255 - 1)

MeanColour = float | Sequence[float] | None

_KERNEL_INIT = nn.initializers.normal(0.02)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _bn_scale_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(train: bool, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                      scale_init=_bn_scale_init, dtype=dtype)


def _levels(size: int, what: str) -> int:
  """Number of stride-2 steps between ``size`` and 4; ``size`` must be 4 * 2**k, k >= 1."""
  if size < 8 or size & (size - 1):
    raise ValueError(f"{what} must be a power of two >= 8 (e.g. 32, 64, 128); got {size}.")
  return size.bit_length() - 3


def _down_widths(num_layers: int, features: int) -> list[int]:
  """Conv widths on the way down: the last has 8x ``features``, halving back, floored at 1x.

  5 layers -> 1, 1, 2, 4, 8 (Pathak's encoder at 128); 4 -> 1, 2, 4, 8 (DCGAN's D).
  """
  return [features * 2 ** max(0, i - (num_layers - 4)) for i in range(num_layers)]


def _up_widths(num_layers: int, features: int) -> list[int]:
  """Hidden widths on the way up: the last has 1x ``features``, doubling back, capped at 8x."""
  return [features * 2 ** min(3, num_layers - 1 - i) for i in range(num_layers)]


def check_geometry(image_size: int, patch_size: int, overlap: int = 0) -> None:
  """Raises ValueError unless the sizes give a valid centred patch and hole."""
  _levels(image_size, "Context Encoder image size")
  _levels(patch_size, "Context Encoder patch_size")
  if patch_size > image_size:
    raise ValueError(f"patch_size={patch_size} exceeds the image size {image_size}; "
                     "use at most the image size (the paper uses half of it).")
  if overlap < 0 or patch_size - 2 * overlap < 1:
    raise ValueError(f"overlap={overlap} leaves no hole inside a {patch_size}px patch; "
                     f"use 0 <= overlap < {patch_size / 2}.")


def patch_offset(image_size: int, patch_size: int) -> int:
  """Top (= left) pixel index of the centred patch."""
  return (image_size - patch_size) // 2


def centre_hole_masks(batch_size: int, image_size: int, patch_size: int, overlap: int = 4,
                      dtype: Any = jnp.float32) -> jax.Array:
  """Pathak's masks: 1 = known, hole = the centred patch shrunk by ``overlap`` per side.

  Returns:
    [batch_size, image_size, image_size, 1].
  """
  check_geometry(image_size, patch_size, overlap)
  start = patch_offset(image_size, patch_size) + overlap
  stop = start + patch_size - 2 * overlap
  inside = jnp.zeros(image_size, bool).at[start:stop].set(True)
  hole = inside[:, None] & inside[None, :]
  masks = jnp.where(hole, 0.0, 1.0).astype(dtype)[None, :, :, None]
  return jnp.broadcast_to(masks, (batch_size, image_size, image_size, 1))


def crop_patch(images: jax.Array, patch_size: int) -> jax.Array:
  """The centred patch: [B, S, S, C] -> [B, patch_size, patch_size, C] (the target)."""
  start = patch_offset(images.shape[1], patch_size)
  return images[:, start:start + patch_size, start:start + patch_size, :]


def paste_patch(images: jax.Array, patch: jax.Array) -> jax.Array:
  """Overwrites the centred region of images [B, S, S, C] with patch [B, p, p, C]."""
  start = patch_offset(images.shape[1], patch.shape[1])
  return jax.lax.dynamic_update_slice(images, patch.astype(images.dtype), (0, start, start, 0))


def composite_patch(inputs: jax.Array, patch: jax.Array, masks: jax.Array) -> jax.Array:
  """The completed image: known pixels from ``inputs``, hole pixels from the pasted patch.

  Args:
    inputs: [B, S, S, C]; the hole-filled input or the clean image (only known pixels are
      read, so either gives the same result inside the patch region).
    patch: [B, p, p, C], the generator's centred prediction.
    masks: [B, S, S, 1], 1 = known. Holes outside the patch region keep ``inputs``.
  """
  return image_lib.composite(inputs, paste_patch(inputs, patch), masks)


def fill_holes_with_mean(images: jax.Array, masks: jax.Array,
                         mean_colour: MeanColour = 0.0) -> jax.Array:
  """Replaces hole pixels with a mean colour, as the Context Encoder input expects.

  Args:
    images: [B, H, W, C] in [-1, 1].
    masks: [B, H, W, 1], 1 = known.
    mean_colour: a float (every channel), a sequence of C floats (a dataset mean, e.g.
      :data:`PATHAK_MEAN_COLOUR`), or None for each image's per-channel mean over its
      known pixels (0 for an image with no known pixel). The default 0 is mid-grey in [-1, 1].

  Returns:
    [B, H, W, C] with known pixels unchanged.
  """
  channels = images.shape[-1]
  if mean_colour is None:
    known = jnp.sum(images * masks, axis=(1, 2), keepdims=True)
    count = jnp.sum(masks, axis=(1, 2), keepdims=True)
    fill = known / jnp.maximum(count, 1.0)
  else:
    fill = jnp.asarray(mean_colour, images.dtype)
    if fill.ndim > 1 or fill.size not in (1, channels):
      raise ValueError(f"mean_colour={mean_colour!r} must be a float, None or {channels} "
                       "floats (one per image channel).")
  return masks * images + (1.0 - masks) * fill


class ContextEncoder(nn.Module):
  """(images, masks) -> predicted centre patch [B, patch_size, patch_size, C] in [-1, 1].

  Attributes:
    patch_size: side of the predicted centred region (64 at 128x128, 32 at 64x64).
    out_channels: channels of the patch; None = those of the input.
    bottleneck: size of the code between encoder and decoder (4000 in the paper).
    features: width of the first encoder layer and last decoder hidden layer (64).
    mean_colour: hole fill, see :func:`fill_holes_with_mean`.
  """
  patch_size: int = 64
  out_channels: int | None = None
  bottleneck: int = 4000
  features: int = 64
  mean_colour: MeanColour = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, masks: jax.Array, *, train: bool) -> jax.Array:
    """images [B, S, S, C] in [-1, 1] (holes are filled here), masks [B, S, S, 1] -> patch."""
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
      raise ValueError(f"ContextEncoder expects square images [B, S, S, C]; got {images.shape}.")
    image_size = images.shape[1]
    check_geometry(image_size, self.patch_size)
    out_channels = self.out_channels or images.shape[-1]
    x = fill_holes_with_mean(images, masks, self.mean_colour).astype(self.dtype)

    conv = lambda f, k, s, p, bias: nn.Conv(f, (k, k), strides=(s, s), padding=p, use_bias=bias,
                                           kernel_init=_KERNEL_INIT, dtype=self.dtype)
    num_down = _levels(image_size, "image size")
    for i, width in enumerate(_down_widths(num_down, self.features)):
      x = conv(width, 4, 2, ((1, 1), (1, 1)), i == 0)(x)
      if i > 0:
        x = _batch_norm(train, self.dtype)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
    x = conv(self.bottleneck, 4, 1, "VALID", False)(x)  # [B, 1, 1, bottleneck]
    x = nn.leaky_relu(_batch_norm(train, self.dtype)(x), negative_slope=0.2)

    deconv = lambda f, s, p, bias: layers.ConvTranspose(f, (4, 4), strides=(s, s), padding=p,
                                                        use_bias=bias, kernel_init=_KERNEL_INIT,
                                                        dtype=self.dtype)
    num_up = _levels(self.patch_size, "patch_size")
    for i, width in enumerate(_up_widths(num_up, self.features)):
      # First: 1x1 -> 4x4 (valid); then each doubles the size.
      x = deconv(width, 1, "VALID", False)(x) if i == 0 else deconv(width, 2, "SAME", False)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = deconv(out_channels, 2, "SAME", True)(x)
    return jnp.tanh(x.astype(jnp.float32))


class ContextDiscriminator(nn.Module):
  """patches [B, p, p, C] -> logits [B]; judges the predicted patch without its context.

  Attributes:
    features: width of the first conv; later ones double up to 8x (64 in the paper).
  """
  features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patches: jax.Array, *, train: bool) -> jax.Array:
    if patches.ndim != 4 or patches.shape[1] != patches.shape[2]:
      raise ValueError("ContextDiscriminator expects square patches [B, p, p, C]; "
                       f"got {patches.shape}.")
    num_down = _levels(patches.shape[1], "discriminator patch size")
    x = patches.astype(self.dtype)
    for i, width in enumerate(_down_widths(num_down, self.features)):
      x = nn.Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=i == 0,
                  kernel_init=_KERNEL_INIT, dtype=self.dtype)(x)
      if i > 0:
        x = _batch_norm(train, self.dtype)(x)
      x = nn.leaky_relu(x, negative_slope=0.2)
    x = nn.Conv(1, (4, 4), padding="VALID", kernel_init=_KERNEL_INIT, dtype=self.dtype)(x)
    return x.reshape(x.shape[0]).astype(jnp.float32)
