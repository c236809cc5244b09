"""Adversarial losses, selected by name: 'vanilla', 'lsgan' and 'hinge'.

All losses are means over every logit (batch and, for PatchGANs, patches), so they do not
scale with the number of patches.

* ``vanilla``: the non-saturating GAN of Goodfellow et al. (as in pix2pix). D minimises
  ``BCE(D(x), 1) + BCE(D(G(z)), 0)``; G minimises ``BCE(D(G(z)), 1) = -log sigmoid(D(G(z)))``.
  Computed from logits with log-sigmoid (log-sum-exp) forms, so any finite logit is safe.
* ``lsgan``: least squares (Mao et al. 2017) with labels ``a`` (fake), ``b`` (real) and
  ``c`` (the value G wants D to believe). D minimises
  ``1/2 E(D(x) - b)^2 + 1/2 E(D(G(z)) - a)^2``; G minimises ``1/2 E(D(G(z)) - c)^2``.
  Defaults ``a, b, c = 0, 1, 1`` match pix2pix's lsgan mode (which uses an MSE without the
  1/2, so its G term is 2x ours). The paper's other choice ``a, b, c = -1, 1, 0``
  (b - c = 1, b - a = 2) makes D minimise the Pearson chi^2 divergence; use it by passing
  the constants. Logits are squared, so they must stay below ~1e19 in float32.
* ``hinge``: D minimises ``E relu(1 - D(x)) + E relu(1 + D(G(z)))``; G minimises
  ``-E D(G(z))``.

The constants ``a``, ``b``, ``c`` are accepted by every function and ignored unless the kind
is 'lsgan', so callers can pass one config everywhere.
"""

import jax
import jax.numpy as jnp
import optax

KINDS = ("vanilla", "lsgan", "hinge")


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"Unknown adversarial loss {kind!r}; choose one of {KINDS}.")


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array,
                       a: float = 0.0, b: float = 1.0, c: float = 1.0) -> jax.Array:
  """D's loss, the sum of its real and fake terms (each a mean).

  Args:
    kind: 'vanilla', 'lsgan' or 'hinge'.
    real_logits: D's raw outputs on real data, any shape (e.g. [B, h, w, 1]).
    fake_logits: D's raw outputs on generated data, any shape.
    a, b, c: LSGAN fake label, real label and G's target (``c`` unused here).

  Returns:
    A scalar.
  """
  _check_kind(kind)
  del c
  if kind == "vanilla":
    real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
    fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
    return jnp.mean(real) + jnp.mean(fake)
  if kind == "lsgan":
    return 0.5 * jnp.mean(jnp.square(real_logits - b)) + 0.5 * jnp.mean(jnp.square(fake_logits - a))
  return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def generator_loss(kind: str, fake_logits: jax.Array,
                   a: float = 0.0, b: float = 1.0, c: float = 1.0) -> jax.Array:
  """G's adversarial loss from D's logits on generated data (any shape) -> scalar."""
  _check_kind(kind)
  del a, b
  if kind == "vanilla":
    return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))
  if kind == "lsgan":
    return 0.5 * jnp.mean(jnp.square(fake_logits - c))
  return -jnp.mean(fake_logits)


def discriminator_accuracy(kind: str, real_logits: jax.Array, fake_logits: jax.Array,
                           a: float = 0.0, b: float = 1.0, c: float = 1.0
                           ) -> tuple[jax.Array, jax.Array]:
  """Fractions of real and fake logits that D classifies correctly.

  The decision threshold is 0 for 'vanilla' and 'hinge' and the midpoint ``(a + b) / 2`` of
  the LSGAN labels; a logit counts as "real" when it lies on ``b``'s side of it.

  Returns:
    (acc_real, acc_fake), two scalars in [0, 1].
  """
  _check_kind(kind)
  del c
  if kind == "lsgan":
    threshold, sign = 0.5 * (a + b), (1.0 if b > a else -1.0)
    if a == b:
      raise ValueError(f"LSGAN labels a and b must differ, got a = b = {a}.")
  else:
    threshold, sign = 0.0, 1.0
  acc_real = jnp.mean((sign * (real_logits - threshold) > 0).astype(jnp.float32))
  acc_fake = jnp.mean((sign * (fake_logits - threshold) < 0).astype(jnp.float32))
  return acc_real, acc_fake
