"""VAE-GAN generator losses (Larsen et al. 2016) for inpainting with a masked-image encoder.

Terms (each a scalar; the adversarial one comes from :mod:`jaxpaint.losses.adversarial`):

* ``kl``: batch mean of KL(q(z|x) || N(0, I)), each summed over the latent dims.
* ``feature``: Larsen's "learned similarity". With a Gaussian observation model
  p(D_l(x) | z) = N(D_l(x~), I) on the discriminator's l-th layer, -log p is
  ``0.5 * ||D_l(x) - D_l(x~)||^2`` plus a constant. ``reduction='sum'`` sums over each
  example's features (Larsen's per-example NLL), ``'mean'`` averages over the elements
  (MSE / 2; its scale does not depend on the layer's size).
* ``pixel``: L1 or L2 between the decoder's image and the target on the KNOWN pixels, mean
  over known elements; ``hole_pixel`` the same on the hole (off by default: the decoder is
  free to invent the hole, which is what makes samples differ).
* ``adv``: the generator's adversarial loss, computed by the caller.

Default weights (``vaegan_generator_losses``) are a starting point, not the paper's: Larsen
et al. give each network its own objective (encoder: KL + feature; decoder:
gamma * feature + GAN with gamma = 1e-5 on per-example sums; D gets no gradient from the
feature term), which one weighted total cannot express exactly; a task that wants that
split can combine the terms per parameter group itself. With ``reduction='mean'`` the
per-example bound ``feature_sum + kl`` divided by the feature count ``D`` is
``feature_mean + kl / D``; at 64x64 with Larsen's layer D = 8 * 8 * 256 = 16384, hence the
default ``kl_weight = 6e-5`` (about 1 / D). ``adv_weight = 0.01`` is pix2pix's
adversarial : L1 ratio (1 : 100).
"""

import jax
import jax.numpy as jnp

PIXEL_LOSSES = ("l1", "l2")
REDUCTIONS = ("mean", "sum")


def kl_divergence(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) per example: mu, logvar [B, Z] -> [B].

  ``-1/2 * sum_z (1 + logvar - mu^2 - exp(logvar))``.
  """
  mu = mu.astype(jnp.float32)
  logvar = logvar.astype(jnp.float32)
  return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def feature_reconstruction_loss(fake_features: jax.Array, real_features: jax.Array,
                                reduction: str = "mean") -> jax.Array:
  """Gaussian NLL (without its constant) of the real features given the fake ones -> scalar.

  Args:
    fake_features: [B, ...], D_l of the decoder's image.
    real_features: [B, ...], D_l of the real image (callers usually stop its gradient).
    reduction: 'mean' = 0.5 * mean over all elements; 'sum' = 0.5 * sum over each
      example's elements, averaged over the batch.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction={reduction!r}; choose one of {REDUCTIONS}.")
  sq = jnp.square(fake_features.astype(jnp.float32) - real_features.astype(jnp.float32))
  if reduction == "mean":
    return 0.5 * jnp.mean(sq)
  return 0.5 * jnp.mean(jnp.sum(sq.reshape(sq.shape[0], -1), axis=1))


def masked_pixel_loss(outputs: jax.Array, targets: jax.Array, region: jax.Array,
                      kind: str = "l1") -> jax.Array:
  """L1/L2 over the pixels where ``region`` [B, H, W, 1] is 1, mean over those elements.

  outputs/targets [B, H, W, C]. Returns 0 when the region is empty.
  """
  if kind not in PIXEL_LOSSES:
    raise ValueError(f"pixel loss {kind!r}; choose one of {PIXEL_LOSSES}.")
  diff = outputs.astype(jnp.float32) - targets.astype(jnp.float32)
  err = jnp.abs(diff) if kind == "l1" else jnp.square(diff)
  region = jnp.broadcast_to(region.astype(jnp.float32), err.shape)
  return jnp.sum(region * err) / jnp.maximum(jnp.sum(region), 1.0)


def vaegan_generator_losses(generated: jax.Array, images: jax.Array, masks: jax.Array,
                            mu: jax.Array, logvar: jax.Array,
                            fake_features: jax.Array | None, real_features: jax.Array | None,
                            adv_term: jax.Array, *, kl_weight: float = 6e-5,
                            feature_weight: float = 1.0, pixel_weight: float = 1.0,
                            hole_pixel_weight: float = 0.0, adv_weight: float = 0.01,
                            pixel_loss: str = "l1", feature_reduction: str = "mean"
                            ) -> dict[str, jax.Array]:
  """The encoder + decoder loss terms and their weighted total.

  Args:
    generated: [B, H, W, C], the decoder's image (not composited).
    images: [B, H, W, C], the clean targets.
    masks: [B, H, W, 1], 1 = known.
    mu, logvar: [B, Z] from the encoder.
    fake_features, real_features: D's features of ``generated`` and ``images``; may be None
      when ``feature_weight`` is 0.
    adv_term: scalar generator adversarial loss (e.g. ``generator_loss('vanilla', D(...))``).
    kl_weight, feature_weight, pixel_weight, hole_pixel_weight, adv_weight: term weights.
    pixel_loss: 'l1' or 'l2'.
    feature_reduction: see :func:`feature_reconstruction_loss`.

  Returns:
    {'kl', 'feature', 'pixel', 'hole_pixel', 'adv', 'loss'} scalars; 'loss' is the total.
  """
  if fake_features is None or real_features is None:
    if feature_weight:
      raise ValueError("feature_weight > 0 needs fake_features and real_features; pass the "
                       "discriminator's features or set feature_weight=0.")
    feature = jnp.zeros((), jnp.float32)
  else:
    feature = feature_reconstruction_loss(fake_features, real_features, feature_reduction)
  terms = {
      "kl": jnp.mean(kl_divergence(mu, logvar)),
      "feature": feature,
      "pixel": masked_pixel_loss(generated, images, masks, pixel_loss),
      "hole_pixel": masked_pixel_loss(generated, images, 1.0 - masks, pixel_loss),
      "adv": jnp.asarray(adv_term, jnp.float32),
  }
  weights = {"kl": kl_weight, "feature": feature_weight, "pixel": pixel_weight,
             "hole_pixel": hole_pixel_weight, "adv": adv_weight}
  terms["loss"] = sum(weights[name] * terms[name] for name in weights)
  return terms
