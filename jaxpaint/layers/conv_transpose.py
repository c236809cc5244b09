"""Transposed convolution that XLA:CPU runs on its fast convolution path.

``lax.conv_transpose`` is a convolution over the stride-dilated input. XLA:CPU runs that
convolution, and its kernel gradient, on a slow generic path: in the Pix2Pix step at 64 px,
batch 8, seven such convolutions took 61% of the step for 10% of its FLOPs
(``benchmarks/RESULTS.md``, section 6). The same result is a sum of stride-1 convolutions of
the undilated input, one per output phase (the "sub-pixel" form), interleaved. On CPU,
:func:`conv_transpose` lowers to that form. On GPU and TPU it lowers to ``lax.conv_transpose``:
their libraries run transposed convolutions natively, and ``lax.platform_dependent`` picks
the form per backend at compile time. Measured on CPU (section 7 there), train steps at 64 px
run 2.3x (Pix2Pix), 3.1x (VAE-GAN) and 4.4x (LSGAN) faster.

:class:`ConvTranspose` is ``flax.linen.ConvTranspose`` for 2-D NHWC inputs, with the same
parameters and outputs and that function inside. It keeps flax's parameter names, so
checkpoints move between the two.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
from flax.linen import dtypes
import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


def _explicit_padding(kernel: int, stride: int, padding: Any) -> tuple[int, int]:
  """The (low, high) padding of the dilated input, as ``lax.conv_transpose`` computes it."""
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    return low, total - low
  if padding == "VALID":
    return kernel - 1, max(kernel, stride) - 1
  low, high = padding
  return int(low), int(high)


def _dilated_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: Sequence[tuple[int, int]],
                  kernel_spec: str) -> jax.Array:
  """conv(dilate(x, stride), kernel, pads): what ``lax.conv_transpose`` computes."""
  return lax.conv_general_dilated(x, kernel, (1, 1), pads, lhs_dilation=(stride, stride),
                                  dimension_numbers=("NHWC", kernel_spec, "NHWC"))


def _phase_conv(x: jax.Array, kernel: jax.Array, stride: int, pads: Sequence[tuple[int, int]],
                out_size: Sequence[int], kernel_spec: str) -> jax.Array:
  """conv(dilate(x, stride), kernel, pads) as stride**2 stride-1 convolutions of x.

  Output o = stride * q + r (per spatial dim) sums kernel taps t = t_r + stride * u over
  input pixels i = q + d_r + u, with t_r = (low - r) mod stride and
  d_r = (r + t_r - low) / stride: phase r is a plain correlation of x with kernel[t_r::stride].
  """
  batch, out_channels = x.shape[0], kernel.shape[kernel_spec.index("O")]
  counts = [-(-size // stride) for size in out_size]  # q per phase, before cropping
  phases = []
  for r_h in range(stride):
    row = []
    for r_w in range(stride):
      taps, crops = [], []
      for dim, r in enumerate((r_h, r_w)):
        low = pads[dim][0]
        t_r = (low - r) % stride
        d_r = (r + t_r - low) // stride
        n_taps = max(0, -(-(kernel.shape[dim] - t_r) // stride))
        taps.append((t_r, n_taps))
        # Input rows d_r .. counts - 1 + d_r + n_taps - 1 (zeros outside x): lax.pad crops
        # where the amount is negative.
        crops.append((-d_r, counts[dim] - 1 + d_r + n_taps - 1 - (x.shape[1 + dim] - 1)))
      if taps[0][1] == 0 or taps[1][1] == 0:
        row.append(jnp.zeros((batch, counts[0], counts[1], out_channels), x.dtype))
        continue
      sub_kernel = kernel[taps[0][0]::stride, taps[1][0]::stride]
      padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*crops[0], 0), (*crops[1], 0), (0, 0, 0)))
      row.append(lax.conv_general_dilated(padded, sub_kernel, (1, 1), "VALID",
                                          dimension_numbers=("NHWC", kernel_spec, "NHWC")))
    phases.append(jnp.stack(row, axis=3))  # [B, Qh, Qw, r_w, C]
  y = jnp.stack(phases, axis=2)  # [B, Qh, r_h, Qw, r_w, C]
  y = y.reshape(batch, counts[0] * stride, counts[1] * stride, out_channels)
  return y[:, :out_size[0], :out_size[1]]


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding,
                   transpose_kernel: bool = False) -> jax.Array:
  """``lax.conv_transpose`` for x [B, H, W, C_in] (NHWC) and an HWIO kernel.

  Args:
    x: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out], or [kh, kw, C_out, C_in] with ``transpose_kernel``.
    strides: (sh, sw), equal (the phase decomposition assumes one stride).
    padding: 'SAME', 'VALID' or ((low, high), (low, high)) of the dilated input.
    transpose_kernel: flip the kernel and swap its channel axes (the exact adjoint of a
      strided convolution, as PyTorch's ConvTranspose2d).

  Returns:
    [B, H', W', C_out], equal to ``lax.conv_transpose`` up to float summation order.
  """
  if len(set(strides)) != 1:
    raise ValueError(f"conv_transpose takes equal strides; got {tuple(strides)}.")
  stride = int(strides[0])
  # The adjoint's kernel is [kh, kw, out, in] flipped: read its channels as HWOI rather than
  # transpose them (a transposed kernel gradient fused into the optimizer update is slow).
  kernel_spec = "HWOI" if transpose_kernel else "HWIO"
  if transpose_kernel:
    kernel = jnp.flip(kernel, axis=(0, 1))
  padding_pairs = [padding] * 2 if isinstance(padding, str) else list(padding)
  pads = [_explicit_padding(k, stride, p) for k, p in zip(kernel.shape[:2], padding_pairs)]
  out_size = [(n - 1) * stride + 1 + low + high - k + 1
              for n, k, (low, high) in zip(x.shape[1:3], kernel.shape[:2], pads)]

  if stride == 1:  # a plain convolution: nothing to decompose
    return _dilated_conv(x, kernel, stride, pads, kernel_spec)
  return lax.platform_dependent(
      x, kernel, cpu=lambda x, k: _phase_conv(x, k, stride, pads, out_size, kernel_spec),
      default=lambda x, k: _dilated_conv(x, k, stride, pads, kernel_spec))


class ConvTranspose(nn.Module):
  """``flax.linen.ConvTranspose`` for 2-D NHWC inputs, through :func:`conv_transpose`.

  Same attributes (those the models use), parameters (``kernel`` [kh, kw, in, out], or
  [kh, kw, out, in] with ``transpose_kernel``; ``bias`` [out]) and outputs.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  transpose_kernel: bool = False
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, H, W, C_in] -> [B, H', W', features]."""
    if x.ndim != 4:
      raise ValueError(f"ConvTranspose expects [B, H, W, C] inputs; got shape {x.shape}.")
    channels = (self.features, x.shape[-1]) if self.transpose_kernel else (x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + channels, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_transpose(x, kernel, self.strides, self.padding, self.transpose_kernel)
    return y if bias is None else y + bias
