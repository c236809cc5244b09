"""Partial convolution (Liu et al. 2018), numerically equal to NVIDIA's ``PartialConv2d``.

With a mask ``M`` (1 = valid) and window sums ``U`` of the mask over the kernel footprint
(same stride, padding and dilation as the feature convolution)::

  ratio = slide_winsize / (U + eps) * clip(U, 0, 1)
  out   = (conv(x * M) * ratio + b) * clip(U, 0, 1)   # b = 0 without bias; NVIDIA writes
                                                     # ((conv + b - b) * ratio + b) * clip
  new_mask = clip(U, 0, 1)

so windows without a valid pixel give exactly 0, even with a bias.

Mask modes (the form of ``mask`` picks one):

* single-channel, ``mask`` [B, H, W, 1]: ``U`` is the box sum of the mask and
  ``slide_winsize = kh * kw`` (NVIDIA ``multi_channel=False``).
* multi-channel, ``mask`` [B, H, W, C_in]: ``U`` sums the mask over channels and the
  footprint and ``slide_winsize = C_in * kh * kw`` (NVIDIA ``multi_channel=True``).
* grouped, ``mask`` a sequence of :data:`MaskGroup` ``(mask_g [B, H, W, 1], C_g)``: the
  input is a channel concatenation of sources whose ``C_g`` channels share one spatial mask
  (``sum C_g == C_in``). This is multi-channel mode on the broadcast masks, computed without
  materialising a C_in-channel mask: ``U = sum_g C_g * boxsum(mask_g)``.

``mask=None`` means all valid (single-channel), as in NVIDIA's code.

The fast path never convolves a mask with a C_in x C_out kernel: it sums over channels (or
weights each group by C_g) around one ``lax.reduce_window`` box sum of the 1-channel masks. ``mask_update='naive'`` instead convolves the full
(broadcast) mask with an all-ones ``[kh, kw, C_in, features]`` kernel as most implementations
do; it exists to benchmark and test the fast path.

The returned mask always has one channel, [B, H', W', 1]: NVIDIA's multi-channel
``update_mask`` has C_out channels, but they are identical, so one broadcasts the same way.
The mask path runs in float32 (``eps`` would vanish in bfloat16) under ``stop_gradient``, as
NVIDIA computes it under ``no_grad``; masks are 0/1, so ``x * mask`` runs in the compute dtype.
"""

from typing import Any, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import dtypes
from jax import lax

MaskGroup = tuple[jax.Array, int]
MaskArg = Union[jax.Array, Sequence[MaskGroup], None]
PadPairs = tuple[tuple[int, int], tuple[int, int]]
MASK_UPDATES = ("fast", "naive")
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _pair(value: Union[int, Sequence[int]], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    raise ValueError(f"{name}={value!r}: give an int or a pair of ints (height, width).")
  return value


def resolve_padding(padding: Any, in_hw: Sequence[int], kernel_size: tuple[int, int],
                    strides: tuple[int, int], dilation: tuple[int, int]) -> PadPairs:
  """Explicit ((top, bottom), (left, right)) pads for 'SAME'/'VALID', p, (ph, pw) or pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding={padding!r}: use 'SAME', 'VALID', an int or explicit pairs.")
    effective = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
    return tuple(lax.padtype_to_pads(in_hw, effective, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  padding = tuple(padding)
  if len(padding) == 2 and all(isinstance(p, int) for p in padding):
    return ((padding[0], padding[0]), (padding[1], padding[1]))
  if len(padding) == 2 and all(len(tuple(p)) == 2 for p in padding):
    return tuple(tuple(int(v) for v in p) for p in padding)
  raise ValueError(f"padding={padding!r}: use 'SAME', 'VALID', an int, (ph, pw) or "
                   "((top, bottom), (left, right)).")


def box_sum(masks: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
            pads: PadPairs, dilation: tuple[int, int]) -> jax.Array:
  """Per-channel window sums of masks [B, H, W, G] -> [B, H', W', G] (zero padding)."""
  return lax.reduce_window(
      masks, jnp.array(0, masks.dtype), lax.add,
      window_dimensions=(1, *kernel_size, 1), window_strides=(1, *strides, 1),
      padding=((0, 0), *pads, (0, 0)), window_dilation=(1, *dilation, 1))


def concat_with_masks(features: Sequence[jax.Array],
                      masks: Sequence[jax.Array]) -> tuple[jax.Array, list[MaskGroup]]:
  """Concatenates sources [B, H, W, C_g] and pairs each mask [B, H, W, 1] with C_g.

  Returns the input and the grouped mask for a :class:`PartialConv` on the concatenation.
  """
  if len(features) != len(masks):
    raise ValueError(f"got {len(features)} feature arrays but {len(masks)} masks; give one mask per source.")
  groups = [(m, f.shape[-1]) for f, m in zip(features, masks)]
  return jnp.concatenate(features, axis=-1), groups


def _normalise_mask(mask: MaskArg, x: jax.Array) -> tuple[list[MaskGroup], str]:
  """Checks ``mask`` against x [B, H, W, C_in]; returns float32 groups and the mode."""
  in_channels = x.shape[-1]
  if mask is None:
    return [(jnp.ones((1, *x.shape[1:3], 1), jnp.float32), 1)], "single"
  if isinstance(mask, (list, tuple)):
    if not mask or not all(isinstance(g, (list, tuple)) and len(g) == 2 for g in mask):
      raise ValueError("a grouped mask is a non-empty sequence of (mask [B, H, W, 1], channels) pairs.")
    if not all(isinstance(c, (int, np.integer)) for _, c in mask):
      raise ValueError("mask group channel counts must be Python ints (static under jit); got "
                       f"{[type(c).__name__ for _, c in mask]}. Close over them instead of passing them as jit arguments.")
    groups = [(jnp.asarray(m), int(c)) for m, c in mask]
    if sum(c for _, c in groups) != in_channels:
      raise ValueError(f"mask group channels {[c for _, c in groups]} sum to "
                       f"{sum(c for _, c in groups)} but the input has {in_channels} channels.")
    shape = groups[0][0].shape
    for m, c in groups:
      if m.ndim != 4 or m.shape[-1] != 1 or m.shape[1:3] != x.shape[1:3] or m.shape != shape or c < 1:
        raise ValueError(f"each mask group needs a [B, {x.shape[1]}, {x.shape[2]}, 1] mask of one "
                         f"shape and >= 1 channels; got {m.shape} with {c} channels.")
    return [(m.astype(jnp.float32), c) for m, c in groups], "grouped"
  mask = jnp.asarray(mask)
  if mask.ndim != 4 or mask.shape[1:3] != x.shape[1:3] or mask.shape[-1] not in (1, in_channels):
    raise ValueError(f"mask shape {mask.shape} does not fit input {x.shape}: use [B, H, W, 1] "
                     f"(single-channel) or [B, H, W, {in_channels}] (multi-channel).")
  return [(mask.astype(jnp.float32), 1)], "single" if mask.shape[-1] == 1 else "multi"


class PartialConv(nn.Module):
  """2-D partial convolution; ``y, new_mask = PartialConv(...)(x, mask)``.

  Params ``kernel`` [kh, kw, C_in, features] and ``bias`` [features] are named and shaped as
  in ``nn.Conv``. See the module docstring for the mask modes and the formula.

  Attributes:
    features: output channels.
    kernel_size: int or (kh, kw).
    strides: int or (sh, sw).
    padding: 'SAME', 'VALID', an int, (ph, pw) or ((top, bottom), (left, right)); the
      mask window sums use the same pads (zeros count as holes).
    kernel_dilation: int or (dh, dw).
    use_bias: add ``bias`` inside the valid region.
    mask_update: 'fast' (box sums) or 'naive' (full ones-kernel convolution of the mask).
    eps: added to the window sum before dividing (NVIDIA: 1e-8; always float32 here).
  """
  features: int
  kernel_size: Union[int, Sequence[int]]
  strides: Union[int, Sequence[int]] = 1
  padding: Any = "SAME"
  kernel_dilation: Union[int, Sequence[int]] = 1
  use_bias: bool = True
  mask_update: str = "fast"
  eps: float = 1e-8
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array, mask: MaskArg = None) -> tuple[jax.Array, jax.Array]:
    """x [B, H, W, C_in]; mask [B, H, W, 1], [B, H, W, C_in], groups or None (all valid).

    Returns (y [B, H', W', features] in the compute dtype, new_mask [B, H', W', 1] float32).
    """
    if x.ndim != 4:
      raise ValueError(f"PartialConv expects NHWC input [B, H, W, C]; got shape {x.shape}.")
    if self.mask_update not in MASK_UPDATES:
      raise ValueError(f"mask_update={self.mask_update!r}; choose one of {MASK_UPDATES}.")
    kernel_size = _pair(self.kernel_size, "kernel_size")
    strides = _pair(self.strides, "strides")
    dilation = _pair(self.kernel_dilation, "kernel_dilation")
    in_channels = x.shape[-1]
    pads = resolve_padding(self.padding, x.shape[1:3], kernel_size, strides, dilation)

    kernel = self.param("kernel", self.kernel_init, (*kernel_size, in_channels, self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None

    groups, mode = _normalise_mask(mask, x)
    groups = [(lax.stop_gradient(m), c) for m, c in groups]
    window = kernel_size[0] * kernel_size[1]
    slide_winsize = float(window if mode == "single" else window * in_channels)
    if mode == "grouped":  # only ever formed inside x * mask, where XLA fuses it
      full_mask = jnp.concatenate(
          [jnp.broadcast_to(m, (*m.shape[:-1], c)) for m, c in groups], axis=-1)
    else:
      full_mask = groups[0][0]
    if mode == "multi":  # sum over channels first, then the same single-channel box sum
      groups = [(jnp.sum(full_mask, axis=-1, keepdims=True), 1)]

    if self.mask_update == "fast":
      stacked = jnp.concatenate([m for m, _ in groups], axis=-1)
      sums = box_sum(stacked, kernel_size, strides, pads, dilation)
      counts = jnp.array([c for _, c in groups], jnp.float32)
      window_sum = jnp.sum(sums * counts, axis=-1, keepdims=True)
    else:
      # [B, H', W', features], identical channels; all of them feed the output below, as in
      # NVIDIA's code, so XLA cannot drop the redundant work this mode exists to measure.
      ones = jnp.ones((*kernel_size, full_mask.shape[-1], self.features), jnp.float32)
      window_sum = lax.conv_general_dilated(
          full_mask, ones, strides, pads, rhs_dilation=dilation,
          dimension_numbers=_DIMENSION_NUMBERS, precision=lax.Precision.HIGHEST)

    new_mask = jnp.clip(window_sum, 0.0, 1.0)
    ratio = slide_winsize / (window_sum + self.eps) * new_mask

    x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    raw = lax.conv_general_dilated(
        x * full_mask.astype(x.dtype), kernel, strides, pads, rhs_dilation=dilation,
        dimension_numbers=_DIMENSION_NUMBERS)
    out = raw.astype(jnp.float32) * ratio
    if bias is not None:
      out = out + bias.astype(jnp.float32)
    out = out * new_mask
    return out.astype(x.dtype), new_mask[..., :1]
