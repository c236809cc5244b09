"""PConv U-Net (Liu et al. 2018, "Image Inpainting for Irregular Holes Using Partial Convolutions").

Encoder, level i = 1..num_levels, each halving H and W:
  PConv 7x7 (base), 5x5 (2 base), 5x5 (4 base), then 3x3 (8 base) repeated;
  BatchNorm + ReLU, except level 1 which has no BN (and so keeps its conv bias).
Decoder, level i = num_levels..1: nearest x2 upsampling of the features and of the mask,
concatenation with the level i-1 skip features and skip mask (level 0 = the input image and
input mask), 3x3 PConv to level i-1's width, BN, LeakyReLU(0.2); the last layer outputs
``out_channels`` with a bias and no BN/activation. ``num_levels`` is 7 at 256^2, 8 at 512^2.

Masks travel as [B, h, w, 1]; a decoder PConv sees its concatenated input through a grouped
mask, i.e. NVIDIA's multi-channel semantics without a C_in-channel mask (see
:mod:`jaxpaint.layers.partial_conv`). Encoder layers get one group ``(mask, C_in)``, the same
multi-channel semantics on a channel-broadcast mask (for 0/1 masks equal to single-channel
mode).

The model masks its input itself (``x * mask`` inside the first PConv), so callers may pass
clean images. ``partial=False`` gives the plain-convolution twin: the same network and
parameter tree with ``nn.Conv`` layers on ``images * masks``.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint.layers import partial_conv

OUTPUT_ACTIVATIONS = ("none", "tanh")


def level_features(level: int, base_features: int) -> int:
  """Width of encoder level ``level`` (1-based): base, 2 base, 4 base, then 8 base."""
  return base_features * min(2 ** (level - 1), 8)


def level_kernel(level: int) -> int:
  return 7 if level == 1 else 5 if level <= 3 else 3


def upsample_nearest(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, 2H, 2W, C], nearest neighbour."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class PConvUNet(nn.Module):
  """Partial-convolution U-Net: ``model.apply(vars, images, masks, train=...)``.

  Attributes:
    out_channels: output channels; None = the input's.
    num_levels: encoder depth; H and W must be divisible by ``2 ** num_levels``.
    base_features: width of the first level (64 in the paper).
    partial: False gives the plain-convolution twin (same parameter shapes).
    mask_update: 'fast' or 'naive' window sums (see :class:`PartialConv`), for benchmarks.
    freeze_encoder_bn: encoder BN uses (and keeps) its running averages even when
      ``train=True`` (the paper's fine-tuning phase). Its scale/bias stay trainable; mask
      them in the optimiser to freeze those as well.
    output_activation: 'none' (the paper) or 'tanh'.
    bn_momentum: running-average momentum (PyTorch's 0.1 is flax's 0.9).
  """
  out_channels: Optional[int] = None
  num_levels: int = 7
  base_features: int = 64
  partial: bool = True
  mask_update: str = "fast"
  freeze_encoder_bn: bool = False
  output_activation: str = "none"
  bn_momentum: float = 0.9
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def _conv(self, features: int, kernel: int, stride: int, use_bias: bool, name: str) -> nn.Module:
    pad = (kernel - 1) // 2  # PyTorch-style symmetric padding, as in the paper's code
    kwargs = dict(features=features, kernel_size=(kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=self.dtype,
                  param_dtype=self.param_dtype, kernel_init=nn.initializers.he_normal(), name=name)
    if self.partial:
      return partial_conv.PartialConv(mask_update=self.mask_update, **kwargs)
    return nn.Conv(**kwargs)

  def _run_conv(self, conv: nn.Module, x: jax.Array, groups) -> tuple[jax.Array, Optional[jax.Array]]:
    if self.partial:
      return conv(x, groups)
    return conv(x), None

  def _batch_norm(self, x: jax.Array, use_running_average: bool, name: str) -> jax.Array:
    return nn.BatchNorm(use_running_average=use_running_average, momentum=self.bn_momentum,
                        epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)

  @nn.compact
  def __call__(self, images: jax.Array, masks: jax.Array, *, train: bool) -> jax.Array:
    """images [B, H, W, C] in [-1, 1] (holes need not be blanked), masks [B, H, W, 1]
    (1 = known) -> float32 [B, H, W, out_channels], the raw (uncomposited) prediction."""
    if self.output_activation not in OUTPUT_ACTIVATIONS:
      raise ValueError(f"output_activation={self.output_activation!r}; choose one of {OUTPUT_ACTIVATIONS}.")
    if self.num_levels < 1:
      raise ValueError(f"num_levels={self.num_levels}; use at least 1.")
    if images.ndim != 4 or masks.shape != (*images.shape[:3], 1):
      raise ValueError(f"expected images [B, H, W, C] and masks [B, H, W, 1]; got {images.shape} "
                       f"and {masks.shape}.")
    height, width = images.shape[1:3]
    factor = 2 ** self.num_levels
    if height % factor or width % factor:
      raise ValueError(
          f"image size {height}x{width} is not divisible by 2**num_levels = {factor}; resize or "
          f"crop to a multiple of {factor}, or lower num_levels (7 suits 256x256, 8 suits 512x512).")

    masks = masks.astype(jnp.float32)
    x = images if self.partial else images * masks.astype(images.dtype)
    m = masks if self.partial else None
    skips = [(x, m)]
    for level in range(1, self.num_levels + 1):
      conv = self._conv(level_features(level, self.base_features), level_kernel(level), 2,
                        use_bias=level == 1, name=f"enc{level}")
      x, m = self._run_conv(conv, x, [(m, x.shape[-1])])
      if level > 1:
        x = self._batch_norm(x, not train or self.freeze_encoder_bn, f"enc_bn{level}")
      x = nn.relu(x)
      skips.append((x, m))

    out_channels = self.out_channels or images.shape[-1]
    for level in range(self.num_levels, 0, -1):
      skip_x, skip_m = skips[level - 1]
      x = upsample_nearest(x)
      if self.partial:
        x, groups = partial_conv.concat_with_masks([x, skip_x], [upsample_nearest(m), skip_m])
      else:
        x, groups = jnp.concatenate([x, skip_x.astype(x.dtype)], axis=-1), None
      last = level == 1
      features = out_channels if last else level_features(level - 1, self.base_features)
      x, m = self._run_conv(self._conv(features, 3, 1, use_bias=last, name=f"dec{level}"), x, groups)
      if not last:
        x = self._batch_norm(x, not train, f"dec_bn{level}")
        x = nn.leaky_relu(x, 0.2)

    if self.output_activation == "tanh":
      x = jnp.tanh(x)
    return x.astype(jnp.float32)
