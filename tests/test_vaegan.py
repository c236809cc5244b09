"""VAE-GAN: KL (closed form and Monte Carlo), reparameterisation, losses vs NumPy, shapes,
and multiple completions of one input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.losses import vaegan as vg_loss
from jaxpaint.models import vaegan as vg


def _random(seed, shape, low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _masks(seed, shape):
  return (np.random.default_rng(seed).uniform(size=shape) > 0.5).astype(np.float32)


# 'rbg' keys: XLA compiles their samplers far faster than threefry's on CPU.
def _key(seed):
  return jax.random.key(seed, impl="rbg")


# --- KL and reparameterisation --------------------------------------------------------------


def test_kl_divergence_closed_form():
  mu, logvar = _random(0, (5, 7), -2, 2), _random(1, (5, 7), -3, 2)
  kl = vg_loss.kl_divergence(mu, logvar)
  m, lv = mu.astype(np.float64), logvar.astype(np.float64)
  # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2) / 2 - 1/2, per dim.
  s2 = np.exp(lv)
  want = np.sum(-0.5 * lv + 0.5 * (s2 + m**2) - 0.5, axis=-1)
  assert kl.shape == (5,)
  np.testing.assert_allclose(kl, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vg_loss.kl_divergence(np.zeros((2, 3)), np.zeros((2, 3))), 0.0)


def test_kl_divergence_matches_monte_carlo():
  # E_q[log q(z) - log p(z)] estimated in NumPy from samples of q: the formula is the true KL.
  mu = np.array([0.8, -1.2, 0.3, 0.0])
  logvar = np.array([-0.6, 0.7, 0.0, -1.5])
  n = 400_000
  rng = np.random.default_rng(2)
  z = mu + np.exp(0.5 * logvar) * rng.standard_normal((n, 4))
  log_q = np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * logvar - 0.5 * (z - mu) ** 2 / np.exp(logvar), -1)
  log_p = np.sum(-0.5 * np.log(2 * np.pi) - 0.5 * z**2, -1)
  samples = log_q - log_p
  mc, se = samples.mean(), samples.std() / np.sqrt(n)
  kl = float(vg_loss.kl_divergence(mu[None].astype(np.float32), logvar[None].astype(np.float32))[0])
  assert abs(mc - kl) < 5 * se, (mc, se, kl)
  assert kl > 1.0  # far from 0, so the comparison is not trivial


def test_reparameterize_statistics_and_gradient():
  mu = np.array([0.5, -2.0, 1.0], np.float32)
  logvar = np.array([0.0, -1.0, 1.2], np.float32)
  n = 200_000
  z = np.asarray(vg.reparameterize(_key(3), jnp.broadcast_to(mu, (n, 3)),
                                   jnp.broadcast_to(logvar, (n, 3))), np.float64)
  std = np.exp(0.5 * logvar)
  np.testing.assert_array_less(np.abs(z.mean(0) - mu), 5 * std / np.sqrt(n))
  np.testing.assert_allclose(z.var(0), np.exp(logvar), rtol=0.02)
  # Same key, same sample; the sample is differentiable in mu and logvar.
  np.testing.assert_array_equal(vg.reparameterize(_key(4), mu, logvar),
                                vg.reparameterize(_key(4), mu, logvar))
  eps = (np.asarray(vg.reparameterize(_key(4), mu, logvar)) - mu) / std
  d_mu, d_logvar = jax.grad(lambda m, lv: jnp.sum(vg.reparameterize(_key(4), m, lv)),
                            argnums=(0, 1))(mu, logvar)
  np.testing.assert_allclose(d_mu, 1.0)
  np.testing.assert_allclose(d_logvar, 0.5 * std * eps, rtol=1e-5)


# --- reconstruction losses ------------------------------------------------------------------


def test_feature_reconstruction_loss():
  fake, real = _random(5, (3, 4, 4, 6), -3, 3), _random(6, (3, 4, 4, 6), -3, 3)
  d2 = (fake.astype(np.float64) - real) ** 2
  np.testing.assert_allclose(vg_loss.feature_reconstruction_loss(fake, real), 0.5 * d2.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(vg_loss.feature_reconstruction_loss(fake, real, "sum"),
                             0.5 * d2.reshape(3, -1).sum(1).mean(), rtol=1e-5)
  with pytest.raises(ValueError, match="reduction"):
    vg_loss.feature_reconstruction_loss(fake, real, "max")


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_masked_pixel_loss(kind):
  out, target = _random(7, (2, 6, 6, 3)), _random(8, (2, 6, 6, 3))
  masks = _masks(9, (2, 6, 6, 1))
  diff = out.astype(np.float64) - target
  err = np.abs(diff) if kind == "l1" else diff**2
  region = np.broadcast_to(masks, err.shape).astype(bool)
  np.testing.assert_allclose(vg_loss.masked_pixel_loss(out, target, masks, kind),
                             err[region].mean(), rtol=1e-5)
  np.testing.assert_allclose(vg_loss.masked_pixel_loss(out, target, 1 - masks, kind),
                             err[~region].mean(), rtol=1e-5)
  assert float(vg_loss.masked_pixel_loss(out, target, np.zeros_like(masks), kind)) == 0.0


def test_vaegan_generator_losses_total():
  gen, images = _random(10, (2, 8, 8, 3)), _random(11, (2, 8, 8, 3))
  masks = _masks(12, (2, 8, 8, 1))
  mu, logvar = _random(13, (2, 5)), _random(14, (2, 5))
  fake_f, real_f = _random(15, (2, 4, 4, 8)), _random(16, (2, 4, 4, 8))
  weights = dict(kl_weight=0.3, feature_weight=2.0, pixel_weight=1.5, hole_pixel_weight=0.7,
                 adv_weight=0.2)
  terms = vg_loss.vaegan_generator_losses(gen, images, masks, mu, logvar, fake_f, real_f, 0.9,
                                          pixel_loss="l2", feature_reduction="sum", **weights)

  m, lv = mu.astype(np.float64), logvar.astype(np.float64)
  kl = np.mean(-0.5 * np.sum(1 + lv - m**2 - np.exp(lv), -1))
  feature = 0.5 * np.mean(np.sum(((fake_f.astype(np.float64) - real_f) ** 2).reshape(2, -1), 1))
  sq = (gen.astype(np.float64) - images) ** 2
  known = np.broadcast_to(masks, sq.shape).astype(bool)
  want = dict(kl=kl, feature=feature, pixel=sq[known].mean(), hole_pixel=sq[~known].mean(), adv=0.9)
  for name, value in want.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5, err_msg=name)
  total = (0.3 * kl + 2.0 * feature + 1.5 * want["pixel"] + 0.7 * want["hole_pixel"] + 0.2 * 0.9)
  np.testing.assert_allclose(terms["loss"], total, rtol=1e-5)

  # Defaults: L1 on the known region, no hole term, no features needed when their weight is 0.
  terms = vg_loss.vaegan_generator_losses(gen, images, masks, mu, logvar, None, None, 0.9,
                                          feature_weight=0.0)
  l1_known = np.abs(gen.astype(np.float64) - images)[known].mean()
  np.testing.assert_allclose(terms["loss"], 6e-5 * kl + l1_known + 0.01 * 0.9, rtol=1e-5)
  with pytest.raises(ValueError, match="feature_weight"):
    vg_loss.vaegan_generator_losses(gen, images, masks, mu, logvar, None, None, 0.9)
  with pytest.raises(ValueError, match="pixel loss"):
    vg_loss.vaegan_generator_losses(gen, images, masks, mu, logvar, fake_f, real_f, 0.9,
                                    pixel_loss="l3")


# --- networks -------------------------------------------------------------------------------


def _init_shapes(module, *args, **kwargs):
  rngs = {"params": jax.random.PRNGKey(0), vg.LATENT_RNG: jax.random.PRNGKey(1)}
  return jax.eval_shape(lambda: module.init_with_output(rngs, *args, **kwargs))


def test_network_shapes_64():
  images, masks = jnp.zeros((2, 64, 64, 3)), jnp.ones((2, 64, 64, 1))
  out, variables = _init_shapes(vg.VAEGANGenerator(), images, masks, train=True)
  assert out.generated.shape == (2, 64, 64, 3)
  assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 128)
  # The encoder sees the masked image and the mask: 4 input channels.
  assert variables["params"]["encoder"]["Conv_0"]["kernel"].shape == (5, 5, 4, 64)
  (logits, features), _ = _init_shapes(vg.VAEGANDiscriminator(), images, train=False)
  assert logits.shape == (2,) and features.shape == (2, 8, 8, 256)
  (_, features), _ = _init_shapes(vg.VAEGANDiscriminator(feature_layer=0), images, train=False)
  assert features.shape == (2, 64, 64, 32)
  (_, features), _ = _init_shapes(vg.VAEGANDiscriminator(feature_layer=1), images, train=False)
  assert features.shape == (2, 32, 32, 128)


def test_network_shapes_small_config():
  model = vg.VAEGANGenerator(image_size=32, out_channels=1, latent_dim=16,
                             encoder_features=(8, 16), encoder_hidden=32, decoder_features=(16, 8))
  images, masks = jnp.zeros((3, 32, 32, 1)), jnp.ones((3, 32, 32, 1))
  out, _ = _init_shapes(model, images, masks, train=False)
  assert out.generated.shape == (3, 32, 32, 1) and out.mu.shape == (3, 16)
  (logits, features), _ = _init_shapes(vg.VAEGANDiscriminator(8, (16, 32), 64), images, train=False)
  assert logits.shape == (3,) and features.shape == (3, 8, 8, 32)


def test_network_size_errors():
  images, masks = jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 32, 32, 1))
  with pytest.raises(ValueError, match="image_size"):
    _init_shapes(vg.VAEGANGenerator(), images, masks, train=False)  # built for 64
  with pytest.raises(ValueError, match="not divisible"):
    _init_shapes(vg.VAEGANGenerator(image_size=36), jnp.zeros((1, 36, 36, 3)),
                 jnp.ones((1, 36, 36, 1)), train=False)
  with pytest.raises(ValueError, match="feature_layer"):
    _init_shapes(vg.VAEGANDiscriminator(feature_layer=4), images, train=False)


def test_sample_completions_and_latent_sampling():
  model = vg.VAEGANGenerator(image_size=16, latent_dim=8, encoder_features=(4, 8),
                             encoder_hidden=16, decoder_features=(8, 4), kernel_size=3)
  images = jnp.asarray(_random(17, (2, 16, 16, 3)))
  masks = jnp.ones((2, 16, 16, 1)).at[:, 4:12, 4:12].set(0.0)

  @jax.jit
  def run(images, masks):  # one compile for everything
    variables = model.init({"params": _key(5), vg.LATENT_RNG: _key(6)}, images, masks, train=False)
    sample = functools.partial(vg.sample_completions, model, variables, images, masks)
    posterior = sample(_key(7), 3)
    prior = sample(_key(8), 3, from_prior=True)
    # Train mode draws z from the 'latent' stream; eval mode decodes the mean.
    train_out, _ = model.apply(variables, images, masks, train=True, rngs={vg.LATENT_RNG: _key(9)},
                               mutable=["batch_stats"])
    eval_out = model.apply(variables, images, masks, train=False)
    return posterior, prior, train_out, eval_out

  posterior, prior, train_out, eval_out = run(images, masks)
  known = np.broadcast_to(np.asarray(masks, bool), images.shape)
  for completions in (posterior, prior):
    completions = np.asarray(completions)
    assert completions.shape == (3, 2, 16, 16, 3)
    for s in range(3):
      np.testing.assert_array_equal(completions[s][known], np.asarray(images)[known])
    hole = completions[:, ~known]  # [3, n_hole]
    for a, b in ((0, 1), (0, 2), (1, 2)):
      assert np.abs(hole[a] - hole[b]).max() > 1e-3
  assert np.abs(np.asarray(train_out.z - train_out.mu)).max() > 1e-3
  np.testing.assert_array_equal(eval_out.z, eval_out.mu)
  with pytest.raises(ValueError, match="num_samples"):
    vg.sample_completions(model, {}, images, masks, _key(0), 0)
