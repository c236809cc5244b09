"""Adversarial losses (vs float64 NumPy) and the generic GAN step machinery."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpaint.losses import adversarial as adv
from jaxpaint.steps import adversarial as machinery


def _key(seed: int) -> jax.Array:
  # RBG keys (XLA's RngBitGenerator) compile several times faster than threefry on CPU, which
  # dominates these tests' compile time; the code under test works with any key type.
  return jax.random.key(seed, impl="rbg")


def _logits(seed, shape=(4, 5, 5, 1)):
  rng = np.random.default_rng(seed)
  x = rng.normal(scale=3.0, size=shape)
  flat = x.reshape(-1)
  flat[:6] = [500.0, -500.0, 1e3, -1e3, 60.0, -60.0]  # saturating / overflow-prone values
  return x


def _softplus64(x):  # log(1 + e^x), computed stably in float64
  return np.logaddexp(0.0, x)


def _np_losses(kind, real, fake, a=0.0, b=1.0, c=1.0):
  """(D loss, G loss) from the formulas in the module docstring, float64."""
  if kind == "vanilla":  # -log sigmoid(r) - log(1 - sigmoid(f)); G: -log sigmoid(f)
    return _softplus64(-real).mean() + _softplus64(fake).mean(), _softplus64(-fake).mean()
  if kind == "lsgan":
    return (0.5 * ((real - b) ** 2).mean() + 0.5 * ((fake - a) ** 2).mean(),
            0.5 * ((fake - c) ** 2).mean())
  return np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean(), -fake.mean()


@pytest.mark.parametrize("kind,consts", [
    ("vanilla", {}), ("hinge", {}), ("lsgan", {}), ("lsgan", dict(a=-1.0, b=1.0, c=0.0))])
def test_losses_match_float64_reference(kind, consts):
  real, fake = _logits(0), _logits(1)
  want_d, want_g = _np_losses(kind, real, fake, **consts)
  got_d = adv.discriminator_loss(kind, jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32), **consts)
  got_g = adv.generator_loss(kind, jnp.asarray(fake, jnp.float32), **consts)
  assert np.isfinite(got_d) and np.isfinite(got_g)
  np.testing.assert_allclose(got_d, want_d, rtol=1e-5)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-5)


def test_vanilla_hand_values_and_finite_gradients():
  # D(real) = D(fake) = 0: both terms are log 2; G: log 2.
  zero = jnp.zeros((3,))
  np.testing.assert_allclose(adv.discriminator_loss("vanilla", zero, zero), 2 * np.log(2), rtol=1e-6)
  np.testing.assert_allclose(adv.generator_loss("vanilla", zero), np.log(2), rtol=1e-6)
  # A confidently wrong D at |logit| = 1e4 costs exactly 1e4 per term, no inf.
  big = jnp.array([1e4])
  np.testing.assert_allclose(adv.discriminator_loss("vanilla", -big, big), 2e4, rtol=1e-6)
  np.testing.assert_allclose(adv.generator_loss("vanilla", -big), 1e4, rtol=1e-6)
  # Gradients are -sigmoid(-r) / n and sigmoid(f) / n: bounded and finite.
  r = jnp.array([-1e4, 1e4, 0.5])
  f = jnp.array([1e4, -1e4, -0.5])
  gr, gf = jax.grad(lambda r, f: adv.discriminator_loss("vanilla", r, f), argnums=(0, 1))(r, f)
  sig = lambda x: 0.5 * (1 + np.tanh(0.5 * np.asarray(x, np.float64)))  # overflow-free
  np.testing.assert_allclose(gr, -sig(-np.asarray(r)) / 3, atol=1e-7)
  np.testing.assert_allclose(gf, sig(np.asarray(f)) / 3, atol=1e-7)
  gg = jax.grad(lambda f: adv.generator_loss("vanilla", f))(f)
  np.testing.assert_allclose(gg, -sig(-np.asarray(f)) / 3, atol=1e-7)


@pytest.mark.parametrize("kind,consts,threshold,sign", [
    ("vanilla", {}, 0.0, 1), ("hinge", {}, 0.0, 1), ("lsgan", {}, 0.5, 1),
    ("lsgan", dict(a=-1.0, b=1.0, c=0.0), 0.0, 1), ("lsgan", dict(a=1.0, b=0.0), 0.5, -1)])
def test_discriminator_accuracy(kind, consts, threshold, sign):
  real, fake = _logits(2) * 0.3, _logits(3) * 0.3
  acc_real, acc_fake = adv.discriminator_accuracy(kind, jnp.asarray(real), jnp.asarray(fake), **consts)
  np.testing.assert_allclose(acc_real, np.mean(sign * (real - threshold) > 0), rtol=1e-6)
  np.testing.assert_allclose(acc_fake, np.mean(sign * (fake - threshold) < 0), rtol=1e-6)
  assert 0 < float(acc_real) < 1 and 0 < float(acc_fake) < 1  # the inputs straddle the threshold


def test_unknown_kind_raises():
  with pytest.raises(ValueError, match="wgan"):
    adv.generator_loss("wgan", jnp.zeros(2))
  with pytest.raises(ValueError, match="must differ"):
    adv.discriminator_accuracy("lsgan", jnp.zeros(2), jnp.zeros(2), a=1.0, b=1.0)


# ---- the step machinery on a toy unconditional GAN with BatchNorm and dropout -------------

class _ToyG(nn.Module):
  @nn.compact
  def __call__(self, z, *, train):
    x = nn.Conv(4, (3, 3))(z)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dropout(0.3, deterministic=not train)(nn.relu(x))
    return jnp.tanh(nn.Conv(3, (3, 3))(x))


class _ToyD(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    h = nn.Conv(4, (3, 3), strides=(2, 2))(x)
    h = nn.leaky_relu(nn.BatchNorm(use_running_average=not train)(h), 0.2)
    return nn.Conv(1, (3, 3))(h), (h,)


class _ToyTask(machinery.AdversarialTask):
  """z -> image GAN with a feature-matching extra loss (exercises ``needs_real_features``)."""
  needs_real_features = True

  def __init__(self, **kwargs):
    super().__init__(optax.sgd(0.1), optax.sgd(0.1), **kwargs)  # SGD: grads = -(delta / 0.1)
    self.g, self.d = _ToyG(), _ToyD()

  def init_models(self, rng, images):
    k1, k2 = jax.random.split(rng)
    return self.g.init(k1, images, train=False), self.d.init(k2, images, train=False)

  def prepare_batch(self, images, rng):
    return {"real": images, "z": jax.random.normal(rng, images.shape)}

  def generate(self, g_variables, batch, rng, train):
    fake, stats = machinery.apply_model(self.g, g_variables, batch["z"], train=train, rngs={"dropout": rng})
    return {"fake": fake}, stats

  def discriminate(self, d_variables, x, batch, train):
    (logits, feats), stats = machinery.apply_model(self.d, d_variables, x, train=train)
    return machinery.DiscriminatorOutput(logits, feats), stats

  def generator_extra_loss(self, outputs, batch, d_fake, d_real):
    fm = jnp.mean(jnp.abs(d_fake.features[0] - d_real.features[0]))
    return 2.0 * fm, {"feature_match": fm}

  def inpaint(self, state, images, masks, rng):
    raise NotImplementedError


def _tree_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def _changed(a, b):
  return all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def toy_run():
  task = _ToyTask(gan_kind="vanilla", adv_weight=0.3, d_loss_scale=0.5)
  images = jax.random.uniform(_key(0), (3, 8, 8, 3), minval=-1, maxval=1)
  state = jax.jit(task.init_state)(_key(1), images)
  # Move BN statistics off their init so "untouched" checks are meaningful.
  state = state.replace(discriminator=state.discriminator.replace(
      batch_stats=jax.tree.map(lambda s: s + 0.1, state.discriminator.batch_stats)))
  rng_batch, rng_g = _key(2), _key(3)

  @jax.jit
  def run(state, images):
    batch = task.prepare_batch(images, rng_batch)
    outputs, pullback, g_stats = task.generator_forward(state, batch, rng_g)
    s1, d_metrics = task.discriminator_step(state, batch, outputs["fake"])
    s2, g_metrics = task.generator_step(s1, batch, outputs, pullback, g_stats)

    # Independent references: plain jax.grad through full recomputations.
    d0, g0 = state.discriminator, state.generator
    fake = outputs["fake"]

    def d_loss(params):
      v = {"params": params, "batch_stats": d0.batch_stats}
      (f_logits, _), upd = task.d.apply(v, fake, train=True, mutable=["batch_stats"])
      v = {"params": params, "batch_stats": upd["batch_stats"]}
      (r_logits, _), upd = task.d.apply(v, images, train=True, mutable=["batch_stats"])
      return 0.5 * adv.discriminator_loss("vanilla", r_logits, f_logits), upd["batch_stats"]

    (d_ref_loss, d_ref_stats), d_ref_grads = jax.value_and_grad(d_loss, has_aux=True)(d0.params)

    d1 = {"params": s1.discriminator.params, "batch_stats": s1.discriminator.batch_stats}

    def g_loss(params):
      v = {"params": params, "batch_stats": g0.batch_stats}
      fake, upd = task.g.apply(v, batch["z"], train=True, rngs={"dropout": rng_g}, mutable=["batch_stats"])
      (f_logits, f_feats), _ = task.d.apply(d1, fake, train=True, mutable=["batch_stats"])
      (_, r_feats), _ = task.d.apply(d1, images, train=True, mutable=["batch_stats"])
      g_adv = adv.generator_loss("vanilla", f_logits)
      fm = jnp.mean(jnp.abs(f_feats[0] - jax.lax.stop_gradient(r_feats[0])))
      return 0.3 * g_adv + 2.0 * fm, (g_adv, upd["batch_stats"])

    (g_ref_loss, (g_ref_adv, g_ref_stats)), g_ref_grads = jax.value_and_grad(g_loss, has_aux=True)(g0.params)
    # G's adversarial loss against the *old* D, to show the step used the new one.
    f_old, _ = task.d.apply({"params": d0.params, "batch_stats": d0.batch_stats}, fake,
                            train=True, mutable=["batch_stats"])
    g_adv_old_d = adv.generator_loss("vanilla", f_old[0])
    refs = dict(d_loss=d_ref_loss, d_stats=d_ref_stats, d_grads=d_ref_grads, g_loss=g_ref_loss,
                g_adv=g_ref_adv, g_stats=g_ref_stats, g_grads=g_ref_grads, g_adv_old_d=g_adv_old_d)
    return s1, s2, d_metrics, g_metrics, refs

  s1, s2, d_metrics, g_metrics, refs = run(state, images)
  return dict(task=task, images=images, state=state, s1=s1, s2=s2, d_metrics=d_metrics,
              g_metrics=g_metrics, refs=refs)


def test_discriminator_step_updates_only_d(toy_run):
  s0, s1, refs = toy_run["state"], toy_run["s1"], toy_run["refs"]
  assert _tree_equal(s1.generator, s0.generator)
  assert _changed(s1.discriminator.params, s0.discriminator.params)
  assert int(s1.discriminator.step) == 1
  # Gradient, loss and running statistics (fake call, then real call) match plain jax.grad.
  grads = jax.tree.map(lambda new, old: (old - new) / 0.1, s1.discriminator.params, s0.discriminator.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, refs["d_grads"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s1.discriminator.batch_stats, refs["d_stats"])
  np.testing.assert_allclose(toy_run["d_metrics"]["d_loss"], refs["d_loss"], rtol=1e-6)
  np.testing.assert_allclose(toy_run["d_metrics"]["d_grad_norm"], optax.global_norm(refs["d_grads"]), rtol=1e-5)


def test_generator_step_updates_only_g_against_updated_d(toy_run):
  s0, s1, s2, refs = toy_run["state"], toy_run["s1"], toy_run["s2"], toy_run["refs"]
  assert _tree_equal(s2.discriminator, s1.discriminator)  # running stats of D's G-pass discarded
  assert _changed(s2.generator.params, s1.generator.params)
  assert int(s2.generator.step) == 1
  # The VJP route (G's forward run once) gives plain jax.grad's gradient.
  grads = jax.tree.map(lambda new, old: (old - new) / 0.1, s2.generator.params, s0.generator.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, refs["g_grads"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), s2.generator.batch_stats, refs["g_stats"])
  m = toy_run["g_metrics"]
  np.testing.assert_allclose(m["g_loss"], refs["g_loss"], rtol=1e-6)
  np.testing.assert_allclose(m["g_adv"], refs["g_adv"], rtol=1e-6)
  assert abs(float(m["g_adv"]) - float(refs["g_adv_old_d"])) > 1e-6  # it saw the updated D
  np.testing.assert_allclose(m["g_grad_norm"], optax.global_norm(refs["g_grads"]), rtol=1e-5)
  assert "feature_match" in m


def test_train_step_composes_phases(toy_run):
  task, state, images = toy_run["task"], toy_run["state"], toy_run["images"]
  new_state, metrics = jax.jit(task.train_step)(state, images, _key(7))
  assert set(metrics) == {"d_loss", "d_acc_real", "d_acc_fake", "d_grad_norm", "g_loss", "g_adv",
                          "g_grad_norm", "feature_match", "loss"}
  assert all(np.isfinite(v) and np.shape(v) == () for v in metrics.values())
  assert float(metrics["loss"]) == float(metrics["g_loss"])
  assert int(new_state.step) == 1 and int(new_state.discriminator.step) == 1
  assert set(task.parameters(new_state)) == {"generator", "discriminator"}


def test_constructor_validates():
  with pytest.raises(ValueError, match="gan_kind"):
    _ToyTask(gan_kind="wgan")
  with pytest.raises(ValueError, match="must differ"):
    _ToyTask(gan_kind="lsgan", lsgan_a=1.0, lsgan_b=1.0)
