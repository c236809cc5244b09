"""Context Encoder generator loss (Pathak et al. 2016): weighted L2 + a little adversarial.

``L = rec_weight * L_rec + adv_weight * L_adv`` with ``rec_weight = 0.999`` and
``adv_weight = 0.001``. ``L_rec`` is an L2 on the predicted patch whose ``overlap``-px
border (the ring of known pixels around the hole that the generator also predicts) is
weighted ``overlap_weight = 10`` times the interior.

Normalisation follows Pathak's train.lua: ``nn.MSECriterion`` averages the squared error
over every element (batch, channels, pixels), and the weight matrix multiplies its gradient.
That is the gradient of ``sum(w * (pred - true)^2) / N`` with ``N = B * h * w * C``, the
element count, NOT the sum of the weights, which is what ``normalization='elements'``
computes. ``'weights'`` divides by ``sum(w)`` instead (a weighted mean, so the overlap ring
does not change the loss scale). The reference logs the unweighted MSE, returned here as
``'l2'``.
"""

import jax
import jax.numpy as jnp
import numpy as np

NORMALIZATIONS = ("elements", "weights")


def reconstruction_weights(patch_size: int | tuple[int, int], overlap: int = 4,
                           overlap_weight: float = 10.0) -> np.ndarray:
  """Per-pixel L2 weights of the predicted patch: ``overlap_weight`` on the border ring.

  Args:
    patch_size: side of the predicted patch, or (h, w).
    overlap: width of the ring (4 in the paper's code; 0 = uniform weights).
    overlap_weight: weight of ring pixels; interior (hole) pixels weigh 1.

  Returns:
    float32 [h, w, 1].
  """
  h, w = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
  if overlap < 0 or h - 2 * overlap < 1 or w - 2 * overlap < 1:
    raise ValueError(f"overlap={overlap} leaves no interior in a {h}x{w} patch; use "
                     f"0 <= overlap < {min(h, w) / 2}.")
  weights = np.full((h, w, 1), overlap_weight, np.float32)
  weights[overlap:h - overlap, overlap:w - overlap] = 1.0
  return weights


def weighted_l2(pred_patch: jax.Array, true_patch: jax.Array, weights: jax.Array,
                normalization: str = "elements") -> jax.Array:
  """Scalar weighted squared error; patches [B, h, w, C], weights broadcastable ([h, w, 1])."""
  if normalization not in NORMALIZATIONS:
    raise ValueError(f"normalization={normalization!r}; choose one of {NORMALIZATIONS}.")
  sq = jnp.square(pred_patch.astype(jnp.float32) - true_patch.astype(jnp.float32))
  weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), sq.shape)
  total = jnp.sum(weights * sq)
  return total / (sq.size if normalization == "elements" else jnp.sum(weights))


def context_encoder_loss(pred_patch: jax.Array, true_patch: jax.Array, weights: jax.Array,
                         adv_term: jax.Array, rec_weight: float = 0.999,
                         adv_weight: float = 0.001, normalization: str = "elements"
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The generator's loss.

  Args:
    pred_patch: [B, h, w, C], the generator's patch.
    true_patch: [B, h, w, C], the real centre patch.
    weights: [h, w, 1] from :func:`reconstruction_weights`.
    adv_term: scalar adversarial loss of the patch, e.g.
      ``adversarial.generator_loss('vanilla', D(pred_patch))`` (Pathak: BCE against "real").
    rec_weight, adv_weight: the paper's 0.999 and 0.001.
    normalization: 'elements' (Pathak) or 'weights', see the module docstring.

  Returns:
    (loss, terms) with terms 'rec' (weighted), 'l2' (plain MSE), 'adv' and 'loss'.
  """
  rec = weighted_l2(pred_patch, true_patch, weights, normalization)
  adv = jnp.asarray(adv_term, jnp.float32)
  loss = rec_weight * rec + adv_weight * adv
  l2 = jnp.mean(jnp.square(pred_patch.astype(jnp.float32) - true_patch.astype(jnp.float32)))
  return loss, {"rec": rec, "l2": l2, "adv": adv, "loss": loss}
