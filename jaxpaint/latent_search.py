"""Semantic inpainting by latent optimisation (Yeh et al. 2017, "Semantic Image Inpainting
with Deep Generative Models"), as used by seed 003 with an LSGAN.

For a corrupted image y with mask M (1 = known) and a frozen generator G and discriminator
D, find the latent z whose image agrees with the known pixels and looks real:

  loss(z) = || W * (G(z) - y) ||_1 + lam * perceptual(D(G(z)))

with W the importance weights (:func:`importance_weights`), the L1 norm summed over pixels
and channels, and perceptual the generator's adversarial loss (LSGAN: 1/2 (D(G(z)) - c)^2,
:func:`lsgan_perceptual`; vanilla GAN: log(1 - sigmoid(D(G(z)))), :func:`vanilla_perceptual`).
Many candidates per image start uniform in [-1, 1], are optimised together (Adam or
Nesterov momentum, z clipped back into the box after every step) and the one with the
lowest final loss wins. The hole is then filled from G(z_best): plain composition
(seed 003, before its autoencoder) or Poisson blending (Yeh et al., :func:`poisson_blend`).

Design: all B * K candidates go through G and D as ONE batch per iteration, and the whole
optimisation is one ``jax.lax.scan``, so it compiles to a single loop and shards over the
batch axis with no host work. Candidates are independent because G and D run in eval mode
(BatchNorm running averages), so differentiating the SUM of all losses gives every
candidate its own gradient; optax's Adam/SGD are elementwise, so one optimiser state over
z [B, K, latent_dim] is per-candidate state.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxpaint import images as images_lib

Array = jax.Array


def _check_masks(masks: Array) -> None:
  if masks.ndim != 4 or masks.shape[-1] != 1:
    raise ValueError(f"masks must be [B, H, W, 1] (1 = known pixel); got shape {masks.shape}.")


def importance_weights(masks: Array, window: int = 7) -> Array:
  """Yeh et al.'s contextual weights: known pixels near the hole matter most.

  W_i = sum_{j in N(i)} (1 - M_j) / |N(i)| if M_i != 0, else 0,

  with N(i) the window x window neighbourhood of pixel i, i itself included (window 7 in
  the paper and in its authors' code). At the image border N(i) holds only the pixels
  inside the image, so |N(i)| is the in-image count (window**2 in the interior, fewer near
  borders) and W_i stays "the fraction of i's neighbours that are holes". Both sums are
  box filters with zero padding (``jax.lax.reduce_window``).

  Args:
    masks: float [B, H, W, 1], 1 = known pixel, 0 = hole (binary).
    window: odd neighbourhood size.

  Returns:
    W: float [B, H, W, 1] in [0, 1], zero on holes.
  """
  _check_masks(masks)
  if window < 1 or window % 2 == 0:
    raise ValueError(f"importance_weights window must be an odd positive int; got {window}.")
  r = window // 2
  dims = (1, window, window, 1)
  pad = ((0, 0), (r, r), (r, r), (0, 0))

  def box_sum(x):
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, (1, 1, 1, 1), pad)

  # Fixed masks (centre squares) are compile-time constants; without the barrier XLA
  # constant-folds these box sums on the host (~20 s CPU per compile for 64 masks of 64x64).
  masks = jax.lax.optimization_barrier(masks.astype(jnp.float32))
  hole_count = box_sum(1.0 - masks)
  neighbour_count = box_sum(jnp.ones((1,) + masks.shape[1:], masks.dtype))
  return masks * hole_count / neighbour_count


def lsgan_perceptual(logits: Array, c: float = 0.0) -> Array:
  """LSGAN generator loss per example, 1/2 (D(G(z)) - c)^2: logits [N] -> [N].

  ``c`` is the value G wants D to output: 0 for the (a, b, c) = (-1, 1, 0) scheme, 1 for
  (0, 1, 1) (Mao et al. 2017); bind it with ``functools.partial``.
  """
  return 0.5 * jnp.square(logits - c)


def vanilla_perceptual(logits: Array) -> Array:
  """Yeh et al.'s perceptual loss log(1 - D(G(z))), D = sigmoid(logits): [N] -> [N]."""
  return jax.nn.log_sigmoid(-logits)


def _make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  if name == "adam":
    return optax.adam(learning_rate)
  if name == "nesterov":
    return optax.sgd(learning_rate, momentum=0.9, nesterov=True)
  raise ValueError(f"latent_search optimizer must be 'adam' or 'nesterov'; got {name!r}.")


def latent_search(
    generate_fn: Callable[[Array], Array],
    discriminate_fn: Callable[[Array], Array],
    images: Array,
    masks: Array,
    rng: Array,
    *,
    num_candidates: int,
    num_steps: int,
    learning_rate: float,
    lam: float,
    perceptual_fn: Callable[[Array], Array],
    latent_dim: int,
    optimizer: str = "adam",
    clip: float | None = 1.0,
    window: int | None = 7,
) -> dict[str, Array]:
  """Inpaints by optimising num_candidates latents per image; keeps the best.

  Not jitted itself: call it inside your jitted function with closures over the frozen
  params, e.g.

    @functools.partial(jax.jit, static_argnames=("num_steps",))
    def inpaint(g_vars, d_vars, images, masks, rng, num_steps):
      gen = lambda z: generator.apply(g_vars, z, train=False)
      disc = lambda x: discriminator.apply(d_vars, x, train=False)
      return latent_search(gen, disc, images, masks, rng, num_steps=num_steps, ...)

  ``num_candidates``, ``num_steps``, ``latent_dim``, ``optimizer``, ``window`` and the
  functions are static; ``learning_rate``, ``lam`` and ``clip`` may be traced.

  Args:
    generate_fn: z [N, latent_dim] -> images [N, H, W, C], frozen eval-mode generator.
      Must treat examples independently (no batch statistics).
    discriminate_fn: images [N, H, W, C] -> logits [N], frozen eval-mode discriminator.
    images: y, float [B, H, W, C] in [-1, 1]; (finite) hole values do not matter.
    masks: float [B, H, W, 1], 1 = known pixel.
    rng: PRNG key for the initial candidates.
    num_candidates: K, latents optimised per image.
    num_steps: optimiser iterations (~1000 in Yeh et al.).
    learning_rate: step size (0.01 in Yeh et al.'s code, Adam or Nesterov).
    lam: weight of the perceptual term (0.1 in Yeh et al.'s code, 10 in seed 003).
    perceptual_fn: logits [N] -> per-example loss [N]; see :func:`lsgan_perceptual`,
      :func:`vanilla_perceptual`.
    latent_dim: size of z.
    optimizer: 'adam' (optax.adam) or 'nesterov' (SGD, Nesterov momentum 0.9).
    clip: after every update z is clipped to [-clip, clip]; None disables it. The
      candidates start uniform in [-1, 1] regardless.
    window: importance-weight window; None uses W = M, the unweighted contextual loss of
      seed 003 (||M * G(z) - M * y||_1).

  Returns:
    A dict of arrays:
      z_best [B, latent_dim]: the winning latent per image.
      completion_raw [B, H, W, C]: G(z_best).
      blended [B, H, W, C]: M * y + (1 - M) * G(z_best).
      loss_best, contextual_best, perceptual_best [B]: its final loss and terms
        (perceptual unweighted by lam).
      losses [B, K]: final total loss of every candidate (after the last update).
      z_candidates [B, K, latent_dim]: every candidate's final latent.
      loss_history, contextual_history [num_steps]: mean over all candidates of the
        total / contextual loss at the point where each step took its gradient.
      z_abs_max_history [num_steps]: max |z| over all candidates after each step.
  """
  _check_masks(masks)
  if images.ndim != 4 or images.shape[:3] != masks.shape[:3]:
    raise ValueError(
        f"images must be [B, H, W, C] matching masks {masks.shape}; got {images.shape}."
    )
  if num_candidates < 1:
    raise ValueError(f"latent_search num_candidates must be >= 1; got {num_candidates}.")
  if num_steps < 0:
    raise ValueError(f"latent_search num_steps must be >= 0; got {num_steps}.")
  tx = _make_optimizer(optimizer, learning_rate)

  batch, k = images.shape[0], num_candidates
  y = jax.lax.stop_gradient(images.astype(jnp.float32))
  masks = jax.lax.stop_gradient(masks.astype(jnp.float32))
  weights = masks if window is None else importance_weights(masks, window)

  def candidate_losses(z):
    """z [B, K, D] -> total [B, K], (contextual [B, K], perceptual [B, K], G(z) [B, K, H, W, C])."""
    generated = generate_fn(z.reshape(batch * k, latent_dim))
    perceptual = perceptual_fn(discriminate_fn(generated)).reshape(batch, k)
    generated = generated.reshape((batch, k) + generated.shape[1:])
    diff = weights[:, None] * (generated - y[:, None])
    contextual = jnp.sum(jnp.abs(diff), axis=(2, 3, 4))
    return contextual + lam * perceptual, (contextual, perceptual, generated)

  def summed_loss(z):
    total, aux = candidate_losses(z)
    return jnp.sum(total), (total, aux[0])

  def step(carry, _):
    z, opt_state = carry
    (_, (total, contextual)), grads = jax.value_and_grad(summed_loss, has_aux=True)(z)
    updates, opt_state = tx.update(grads, opt_state, z)
    z = optax.apply_updates(z, updates)
    if clip is not None:
      z = jnp.clip(z, -clip, clip)
    record = (jnp.mean(total), jnp.mean(contextual), jnp.max(jnp.abs(z)))
    return (z, opt_state), record

  z0 = jax.random.uniform(rng, (batch, k, latent_dim), jnp.float32, -1.0, 1.0)
  (z, _), (loss_hist, ctx_hist, zmax_hist) = jax.lax.scan(
      step, (z0, tx.init(z0)), None, length=num_steps)

  total, (contextual, perceptual, generated) = candidate_losses(z)
  best = jnp.argmin(total, axis=1)  # [B]

  def pick(x):
    index = best.reshape((batch, 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)[:, 0]

  completion = pick(generated)
  return {
      "z_best": pick(z),
      "completion_raw": completion,
      "blended": images_lib.composite(y, completion, masks),
      "loss_best": pick(total),
      "contextual_best": pick(contextual),
      "perceptual_best": pick(perceptual),
      "losses": total,
      "z_candidates": z,
      "loss_history": loss_hist,
      "contextual_history": ctx_hist,
      "z_abs_max_history": zmax_hist,
  }


def poisson_blend(images: Array, generated: Array, masks: Array, num_iters: int = 1000) -> Array:
  """Poisson blending (Perez et al. 2003) of G(z) into the hole, as in Yeh et al.

  Solves, inside the hole, the discrete Poisson equation whose guidance is G's gradient
  and whose boundary values are the known pixels of y:

    |N_p| x_p - sum_{q in N_p} x_q = sum_{q in N_p} (g_p - g_q)  for hole pixels p,
    x_p = y_p                                                    for known pixels p,

  with N_p the 4-neighbours of p inside the image (a Neumann border). It keeps G's
  structure but shifts its colours to meet y without a seam. Solved by a fixed number of
  Jacobi iterations (jit-able, ``lax.fori_loop``) started from the plain composite; the
  error of Jacobi shrinks by about cos(pi / (n + 1)) per iteration for an n-pixel-wide
  hole, so a 32-pixel hole needs ~1000 iterations for 1e-2 of its initial seam error.
  A hole region touching no known pixel keeps G's values (the equation fixes x only up to
  a constant there).

  Args:
    images: y, float [B, H, W, C]; (finite) hole values do not matter.
    generated: g = G(z_best), float [B, H, W, C].
    masks: float [B, H, W, 1], 1 = known pixel (binary).
    num_iters: Jacobi iterations.

  Returns:
    Blended images [B, H, W, C].
  """
  _check_masks(masks)
  if images.shape != generated.shape or images.shape[:3] != masks.shape[:3]:
    raise ValueError(
        f"poisson_blend shapes disagree: images {images.shape}, generated {generated.shape}, "
        f"masks {masks.shape}."
    )

  def neighbour_sum(x):
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]

  count = neighbour_sum(jnp.ones((1,) + images.shape[1:3] + (1,), generated.dtype))
  guidance = count * generated - neighbour_sum(generated)  # sum_q (g_p - g_q)
  known = masks * images

  def body(_, x):
    jacobi = (neighbour_sum(x) + guidance) / count
    return known + (1.0 - masks) * jacobi

  return jax.lax.fori_loop(0, num_iters, body, images_lib.composite(images, generated, masks))
