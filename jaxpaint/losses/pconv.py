"""The PConv U-Net loss (Liu et al. 2018, section 3.3), optionally with a plain MSE term.

With I_out the raw prediction, I_gt the target, M the mask (1 = known) and
I_comp = M * I_gt + (1 - M) * I_out, all over the batch (N_X = number of elements of X):

* valid = ||M * (I_out - I_gt)||_1 / N_{I_gt};  hole = ||(1 - M) * (I_out - I_gt)||_1 / N_{I_gt}
* tv: with P = the hole region dilated by one pixel (3x3 square), the L1 differences of
  I_comp between horizontal neighbours (i, j), (i, j+1) that both lie in P, plus the same
  vertically, summed and divided by N_{I_comp}. Soft masks weight a pair by P(a) * P(b).
* perceptual = sum_p ||Psi_p(I_out) - Psi_p(I_gt)||_1 / N_p + ||Psi_p(I_comp) - Psi_p(I_gt)||_1 / N_p
  over VGG16 pool1, pool2, pool3 (:mod:`jaxpaint.losses.vgg`).
* style_out = sum_p mean |G_p(I_out) - G_p(I_gt)| with the Gram matrix
  G_p = Psi_p^T Psi_p / (C_p H_p W_p) per image (the mean over B C_p^2 entries is the paper's
  1 / C_p^2 factor); style_comp likewise with I_comp.
* mse = mean (I_out - I_gt)^2, the seed's plain loss.

loss = valid w_valid + hole w_hole + tv w_tv + perceptual w_perceptual
       + (style_out + style_comp) w_style + mse w_mse.
Default weights: valid 1, hole 6, tv 0.1, and with VGG weights perceptual 0.05, style 120.
"""

import functools
import os
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from jaxpaint import images as image_lib
from jaxpaint.losses import vgg as vgg_lib

TERMS = ("valid", "hole", "tv", "perceptual", "style", "mse")
Weights = Union[Mapping[str, float], ml_collections.ConfigDict]


def default_weights(with_vgg: bool = False) -> ml_collections.ConfigDict:
  """Liu et al.'s weights; the VGG terms are 0 unless ``with_vgg``."""
  return ml_collections.ConfigDict(dict(
      valid=1.0, hole=6.0, tv=0.1, perceptual=0.05 if with_vgg else 0.0,
      style=120.0 if with_vgg else 0.0, mse=0.0))


def mse_weights() -> ml_collections.ConfigDict:
  """The seed's variant: plain MSE on the whole output, nothing else."""
  return ml_collections.ConfigDict(dict(valid=0.0, hole=0.0, tv=0.0, perceptual=0.0, style=0.0, mse=1.0))


def _resolve_weights(weights: Optional[Weights], with_vgg: bool) -> dict[str, float]:
  resolved = default_weights(with_vgg).to_dict()
  if weights is not None:
    given = weights.to_dict() if hasattr(weights, "to_dict") else dict(weights)
    unknown = set(given) - set(TERMS)
    if unknown:
      raise ValueError(f"unknown PConv loss terms {sorted(unknown)}; valid: {TERMS}.")
    resolved.update({k: float(v) for k, v in given.items()})
  if not with_vgg and (resolved["perceptual"] or resolved["style"]):
    raise ValueError("perceptual/style weights are non-zero but no VGG16 weights were given; "
                     "pass vgg_params=load_vgg16_params(path) or set both weights to 0.")
  return resolved


def dilate_holes(masks: jax.Array) -> jax.Array:
  """masks [B, H, W, 1] (1 = known) -> the hole region grown by one pixel, [B, H, W, 1]."""
  return lax.reduce_window(1.0 - masks, 0.0, lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")


def total_variation(composite: jax.Array, masks: jax.Array) -> jax.Array:
  """TV of composite [B, H, W, C] over the 1-pixel dilation of the holes of masks [B, H, W, 1]."""
  region = dilate_holes(masks)
  dx = jnp.abs(composite[:, :, 1:] - composite[:, :, :-1]) * (region[:, :, 1:] * region[:, :, :-1])
  dy = jnp.abs(composite[:, 1:] - composite[:, :-1]) * (region[:, 1:] * region[:, :-1])
  return (jnp.sum(dx) + jnp.sum(dy)) / composite.size


def gram_matrix(features: jax.Array) -> jax.Array:
  """features [B, H, W, C] -> [B, C, C], divided by C * H * W."""
  _, height, width, channels = features.shape
  flat = features.reshape(features.shape[0], height * width, channels)
  gram = jnp.einsum("bnc,bnd->bcd", flat, flat, precision=lax.Precision.HIGHEST)
  return gram / (channels * height * width)


def _vgg_terms(outputs: jax.Array, composite: jax.Array, targets: jax.Array,
               vgg_params: Any, vgg_dtype: Any) -> dict[str, jax.Array]:
  """Perceptual and style terms from one VGG16 pass over [out; comp; gt]."""
  batch = outputs.shape[0]
  pools = vgg_lib.VGG16Features(dtype=vgg_dtype).apply(
      vgg_params, jnp.concatenate([outputs, composite, targets], axis=0))
  perceptual = style_out = style_comp = 0.0
  for feats in pools:
    feats = feats.astype(jnp.float32)
    f_out, f_comp, f_gt = feats[:batch], feats[batch:2 * batch], feats[2 * batch:]
    perceptual += jnp.mean(jnp.abs(f_out - f_gt)) + jnp.mean(jnp.abs(f_comp - f_gt))
    g_gt = gram_matrix(f_gt)
    style_out += jnp.mean(jnp.abs(gram_matrix(f_out) - g_gt))
    style_comp += jnp.mean(jnp.abs(gram_matrix(f_comp) - g_gt))
  return {"perceptual": perceptual, "style_out": style_out, "style_comp": style_comp}


def pconv_loss(outputs: jax.Array, targets: jax.Array, masks: jax.Array,
               weights: Optional[Weights] = None, vgg_params: Any = None,
               vgg_dtype: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The weighted PConv loss and its terms (module docstring).

  Args:
    outputs: raw model output I_out [B, H, W, C] in [-1, 1].
    targets: clean images I_gt [B, H, W, C] in [-1, 1].
    masks: [B, H, W, 1], 1 = known.
    weights: per-term weights (keys from :data:`TERMS`) overriding :func:`default_weights`.
    vgg_params: ``load_vgg16_params(path)``; None drops the perceptual and style terms.
    vgg_dtype: compute dtype of the VGG pass (e.g. jnp.bfloat16); None = float32.

  Returns:
    (loss, terms): scalars; terms has valid, hole, tv, mse and, with VGG, perceptual,
    style_out, style_comp (VGG terms are skipped when both their weights are 0).
  """
  w = _resolve_weights(weights, vgg_params is not None)
  outputs, targets, masks = (a.astype(jnp.float32) for a in (outputs, targets, masks))
  if outputs.shape != targets.shape or masks.shape != (*targets.shape[:3], 1):
    raise ValueError(f"expected outputs and targets [B, H, W, C] and masks [B, H, W, 1]; got "
                     f"{outputs.shape}, {targets.shape}, {masks.shape}.")
  diff = outputs - targets
  composite = image_lib.composite(targets, outputs, masks)
  terms = {
      "valid": jnp.mean(jnp.abs(masks * diff)),
      "hole": jnp.mean(jnp.abs((1.0 - masks) * diff)),
      "tv": total_variation(composite, masks),
      "mse": jnp.mean(diff ** 2),
  }
  loss = w["valid"] * terms["valid"] + w["hole"] * terms["hole"] + w["tv"] * terms["tv"] + w["mse"] * terms["mse"]
  if vgg_params is not None and (w["perceptual"] or w["style"]):
    terms.update(_vgg_terms(outputs, composite, targets, vgg_params, vgg_dtype))
    loss += w["perceptual"] * terms["perceptual"] + w["style"] * (terms["style_out"] + terms["style_comp"])
  return loss, terms


def make_pconv_loss(weights: Optional[Weights] = None, vgg_path: Optional[Union[str, os.PathLike]] = None,
                    vgg_dtype: Any = None):
  """A ``loss_fn(outputs, targets, masks) -> (loss, terms)`` for the reconstruction task.

  Loads the VGG16 weights from ``vgg_path`` once (they become jit constants of the step).
  """
  vgg_params = vgg_lib.load_vgg16_params(vgg_path) if vgg_path is not None else None
  _resolve_weights(weights, vgg_params is not None)  # fail now, not at the first step
  return functools.partial(pconv_loss, weights=weights, vgg_params=vgg_params, vgg_dtype=vgg_dtype)
