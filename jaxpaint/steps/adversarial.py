"""Shared machinery for adversarially trained tasks (Pix2Pix, LSGAN, Context Encoders, VAE-GAN).

A subclass of :class:`AdversarialTask` says what its networks compute through a few hooks;
the base class owns differentiation, BatchNorm state, optimiser updates and metrics.

Hooks (all pure; ``batch`` is a dict of arrays made by :meth:`prepare_batch`):

* ``init_models(rng, images) -> (g_variables, d_variables)``
* ``prepare_batch(images, rng) -> batch``: per-step inputs drawn on device (masks, latents,
  jitter). ``batch['real']`` is what D must call real (the image, or for Context Encoders
  the true centre patch); conditions (masked image, mask) go under other keys.
* ``generate(g_variables, batch, rng, train) -> (outputs, g_batch_stats)``: ``outputs`` is a
  dict of float arrays that G's loss is differentiated through; ``outputs['fake']`` is
  what D sees as fake (same layout as ``batch['real']``). Extra entries carry what the
  extra loss needs (Pix2Pix's raw output, a VAE's mean and log-variance).
* ``discriminate(d_variables, x, batch, train) -> (DiscriminatorOutput, d_batch_stats)``:
  D on real or fake ``x``, conditioned on whatever it takes from ``batch``. Its
  ``features`` are intermediate activations for feature-space losses (VAE-GAN).
* ``generator_extra_loss(outputs, batch, d_fake, d_real) -> (loss, terms)``: non-adversarial
  terms, already weighted (Pix2Pix's 100 * L1; Context Encoders' 0.999 * L2, with
  ``adv_weight=0.001``). ``d_real`` is D's output on ``batch['real']`` (gradient stopped)
  when ``needs_real_features`` is set, else None.
* ``inpaint`` from :class:`~jaxpaint.steps.base.Task`.

One train step, in order (as pix2pix's ``optimize_parameters``):

1. G's forward pass in train mode (dropout from the step RNG), once, with ``jax.vjp``
   so its backward pass can run later without recomputing it.
2. D's update: D on the fake (gradient stopped), then on the real batch, in two separate
   train-mode calls, so BatchNorm normalises each with its own batch statistics (mixing real
   and fake in one batch lets D tell them apart by their statistics). D's running averages
   are updated by both calls, fake first. Accuracies come from these (pre-update) logits.
3. G's update against the *updated* D: D is applied in train mode to the same fake (batch
   statistics of the fake batch, as in pix2pix), but the running averages that call would
   write are discarded, so G's update changes only G's state and D's state only D's.
   G's running averages come from its single forward pass in step 1.

Losses: ``d_loss = d_loss_scale * discriminator_loss(...)`` (pix2pix: 0.5), ``g_loss =
adv_weight * g_adv + extra``. Losses are float32 even when the networks run in bfloat16.
"""

import abc
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxpaint.losses import adversarial as adv_losses
from jaxpaint.steps import base
from jaxpaint.steps.reconstruction import TrainState

Variables = dict[str, Any]
Batch = dict[str, jax.Array]
Outputs = dict[str, jax.Array]


class DiscriminatorOutput(NamedTuple):
  logits: jax.Array  # any shape, e.g. [B] or PatchGAN's [B, h, w, 1]
  features: tuple[jax.Array, ...] = ()


@flax.struct.dataclass
class GANState:
  """Generator and discriminator train states, each with its own optimiser and BN stats."""
  generator: TrainState
  discriminator: TrainState

  @property
  def step(self) -> jax.Array:
    return self.generator.step


def variables(params: Any, batch_stats: Any) -> Variables:
  """A linen variables dict; BatchNorm statistics only when the model has any."""
  out = {"params": params}
  if batch_stats:
    out["batch_stats"] = batch_stats
  return out


def apply_model(module: nn.Module, model_variables: Variables, *args, train: bool,
                rngs: dict[str, jax.Array] | None = None, **kwargs) -> tuple[Any, Any]:
  """``module.apply`` that returns (output, batch_stats), updated in train mode.

  Models without BatchNorm return an empty dict as their statistics.
  """
  stats = model_variables.get("batch_stats", {})
  if train and stats:
    out, updates = module.apply(model_variables, *args, train=True, rngs=rngs,
                                mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]
  return module.apply(model_variables, *args, train=train, rngs=rngs, **kwargs), stats


class AdversarialTask(base.Task):
  """A generator trained against a discriminator; see the module docstring for the hooks.

  Args:
    g_tx, d_tx: the two optimisers.
    gan_kind: 'vanilla', 'lsgan' or 'hinge' (:mod:`jaxpaint.losses.adversarial`).
    adv_weight: weight of G's adversarial term.
    d_loss_scale: factor on D's loss (pix2pix halves it).
    lsgan_a, lsgan_b, lsgan_c: LSGAN fake label, real label and G's target.
  """

  #: Set to True to get D's output on the real batch in :meth:`generator_extra_loss`.
  needs_real_features: bool = False

  def __init__(self, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation, *,
               gan_kind: str = "vanilla", adv_weight: float = 1.0, d_loss_scale: float = 1.0,
               lsgan_a: float = 0.0, lsgan_b: float = 1.0, lsgan_c: float = 1.0):
    if gan_kind not in adv_losses.KINDS:
      raise ValueError(f"gan_kind={gan_kind!r}; choose one of {adv_losses.KINDS}.")
    if gan_kind == "lsgan" and lsgan_a == lsgan_b:
      raise ValueError(f"LSGAN labels must differ; got lsgan_a = lsgan_b = {lsgan_a}.")
    self.g_tx, self.d_tx = g_tx, d_tx
    self.gan_kind = gan_kind
    self.adv_weight, self.d_loss_scale = adv_weight, d_loss_scale
    self.gan_consts = dict(a=lsgan_a, b=lsgan_b, c=lsgan_c)

  # ---- hooks ---------------------------------------------------------------------------

  @abc.abstractmethod
  def init_models(self, rng: jax.Array, images: jax.Array) -> tuple[Variables, Variables]:
    """(G's variables, D's variables) for images [B, H, W, C]."""

  @abc.abstractmethod
  def prepare_batch(self, images: jax.Array, rng: jax.Array) -> Batch:
    """Per-step inputs from clean images [B, H, W, C]; must hold 'real'."""

  @abc.abstractmethod
  def generate(self, g_variables: Variables, batch: Batch, rng: jax.Array, train: bool
               ) -> tuple[Outputs, Any]:
    """(outputs with 'fake', G's batch stats) -- see the module docstring."""

  @abc.abstractmethod
  def discriminate(self, d_variables: Variables, x: jax.Array, batch: Batch, train: bool
                   ) -> tuple[DiscriminatorOutput, Any]:
    """(D's output on x, D's batch stats) -- see the module docstring."""

  def generator_extra_loss(self, outputs: Outputs, batch: Batch, d_fake: DiscriminatorOutput,
                           d_real: DiscriminatorOutput | None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted non-adversarial G loss and its named (scalar) terms; none by default."""
    del outputs, batch, d_fake, d_real
    return jnp.zeros((), jnp.float32), {}

  # ---- Task ------------------------------------------------------------------------------

  def init_state(self, rng: jax.Array, images: jax.Array) -> GANState:
    g_vars, d_vars = self.init_models(rng, images)
    make = lambda v, tx: TrainState.create(apply_fn=None, params=v["params"], tx=tx,
                                           batch_stats=v.get("batch_stats", {}))
    return GANState(generator=make(g_vars, self.g_tx), discriminator=make(d_vars, self.d_tx))

  def parameters(self, state: GANState) -> Any:
    return {"generator": state.generator.params, "discriminator": state.discriminator.params}

  def train_step(self, state: GANState, images: jax.Array, rng: jax.Array
                 ) -> tuple[GANState, base.Metrics]:
    batch_rng, g_rng = jax.random.split(rng)
    batch = self.prepare_batch(images, batch_rng)
    outputs, pullback, g_stats = self.generator_forward(state, batch, g_rng)
    state, d_metrics = self.discriminator_step(state, batch, outputs["fake"])
    state, g_metrics = self.generator_step(state, batch, outputs, pullback, g_stats)
    return state, {**d_metrics, **g_metrics, "loss": g_metrics["g_loss"]}

  # ---- the three phases of a step (public so tests can run them one by one) -------------

  def generator_forward(self, state: GANState, batch: Batch, rng: jax.Array
                        ) -> tuple[Outputs, Callable[[Outputs], tuple[Any]], Any]:
    """G in train mode; returns (outputs, VJP from outputs' cotangents to G's grads, G's new stats)."""
    g = state.generator

    def forward(params):
      return self.generate(variables(params, g.batch_stats), batch, rng, True)

    return jax.vjp(forward, g.params, has_aux=True)

  def discriminator_step(self, state: GANState, batch: Batch, fake: jax.Array
                         ) -> tuple[GANState, base.Metrics]:
    """One optimiser step on D's loss; G's state is returned untouched."""
    d = state.discriminator
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(params):
      fake_out, stats = self.discriminate(variables(params, d.batch_stats), fake, batch, True)
      real_out, stats = self.discriminate(variables(params, stats), batch["real"], batch, True)
      real_logits = real_out.logits.astype(jnp.float32)
      fake_logits = fake_out.logits.astype(jnp.float32)
      loss = adv_losses.discriminator_loss(self.gan_kind, real_logits, fake_logits, **self.gan_consts)
      return self.d_loss_scale * loss, (stats, real_logits, fake_logits)

    (d_loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d.params)
    acc_real, acc_fake = adv_losses.discriminator_accuracy(
        self.gan_kind, real_logits, fake_logits, **self.gan_consts)
    metrics = {"d_loss": d_loss, "d_acc_real": acc_real, "d_acc_fake": acc_fake,
               "d_grad_norm": optax.global_norm(grads)}
    return state.replace(discriminator=d.apply_gradients(grads=grads, batch_stats=stats)), metrics

  def generator_step(self, state: GANState, batch: Batch, outputs: Outputs,
                     pullback: Callable[[Outputs], tuple[Any]], g_stats: Any
                     ) -> tuple[GANState, base.Metrics]:
    """One optimiser step on G's loss against the current D; D's state is returned untouched."""
    d = state.discriminator
    d_vars = variables(d.params, d.batch_stats)
    d_real = None
    if self.needs_real_features:
      d_real, _ = self.discriminate(d_vars, batch["real"], batch, True)
      d_real = jax.lax.stop_gradient(d_real)

    def loss_fn(outputs):
      d_fake, _ = self.discriminate(d_vars, outputs["fake"], batch, True)  # stats discarded
      g_adv = adv_losses.generator_loss(self.gan_kind, d_fake.logits.astype(jnp.float32), **self.gan_consts)
      extra, terms = self.generator_extra_loss(outputs, batch, d_fake, d_real)
      return self.adv_weight * g_adv + extra, (g_adv, terms)

    (g_loss, (g_adv, terms)), cotangents = jax.value_and_grad(loss_fn, has_aux=True)(outputs)
    (grads,) = pullback(cotangents)
    metrics = {"g_loss": g_loss, "g_adv": g_adv, "g_grad_norm": optax.global_norm(grads), **terms}
    g = state.generator.apply_gradients(grads=grads, batch_stats=g_stats)
    return state.replace(generator=g), metrics
