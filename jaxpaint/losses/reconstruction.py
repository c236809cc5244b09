"""Pixel reconstruction losses on the whole image and on the hole."""

import jax
import jax.numpy as jnp
import ml_collections

TERMS = ("mse", "l1", "hole_mse", "hole_l1")


def default_config() -> ml_collections.ConfigDict:
  """``config.loss`` for reconstruction models: a weight per term (0 switches it off)."""
  return ml_collections.ConfigDict(dict(mse=1.0, l1=0.0, hole_mse=0.0, hole_l1=0.0))


def reconstruction_terms(outputs: jax.Array, targets: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
  """Scalar losses; outputs/targets [B, H, W, C], masks [B, H, W, 1] (1 = known).

  Whole-image terms are means over all pixels and channels; hole terms are means over hole
  pixels and channels of the whole batch (0 when the batch has no hole).
  """
  diff = outputs.astype(jnp.float32) - targets.astype(jnp.float32)
  hole = jnp.broadcast_to(1.0 - masks, diff.shape)
  hole_count = jnp.maximum(hole.sum(), 1.0)
  return {
      "mse": jnp.mean(diff**2),
      "l1": jnp.mean(jnp.abs(diff)),
      "hole_mse": jnp.sum(hole * diff**2) / hole_count,
      "hole_l1": jnp.sum(hole * jnp.abs(diff)) / hole_count,
  }


def reconstruction_loss(outputs: jax.Array, targets: jax.Array, masks: jax.Array,
                        weights: ml_collections.ConfigDict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted sum of :func:`reconstruction_terms`; returns (loss, all terms)."""
  unknown = set(weights.keys()) - set(TERMS)
  if unknown:
    raise ValueError(f"unknown reconstruction loss terms {sorted(unknown)}; valid: {TERMS}.")
  terms = reconstruction_terms(outputs, targets, masks)
  loss = sum(weights[name] * terms[name] for name in TERMS if weights.get(name, 0.0))
  return jnp.asarray(loss, jnp.float32), terms
