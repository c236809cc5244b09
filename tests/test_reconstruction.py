"""Reconstruction losses against float64 NumPy, and the optimiser schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxpaint import defaults, optim
from jaxpaint.losses import reconstruction


def _random_batch(seed=0, shape=(3, 12, 10, 3)):
  rng = np.random.default_rng(seed)
  out = rng.uniform(-1, 1, shape)
  target = rng.uniform(-1, 1, shape)
  masks = (rng.uniform(size=shape[:-1] + (1,)) > 0.3).astype(np.float64)
  return out, target, masks


def test_terms_match_numpy():
  out, target, masks = _random_batch()
  terms = reconstruction.reconstruction_terms(jnp.asarray(out), jnp.asarray(target), jnp.asarray(masks))
  diff = out - target
  hole = np.broadcast_to(masks == 0, diff.shape)
  np.testing.assert_allclose(terms["mse"], np.mean(diff**2), rtol=1e-5)
  np.testing.assert_allclose(terms["l1"], np.mean(np.abs(diff)), rtol=1e-5)
  np.testing.assert_allclose(terms["hole_mse"], np.mean(diff[hole] ** 2), rtol=1e-5)
  np.testing.assert_allclose(terms["hole_l1"], np.mean(np.abs(diff[hole])), rtol=1e-5)


def test_weighted_sum_and_unknown_term():
  out, target, masks = _random_batch(1)
  weights = ml_collections.ConfigDict(dict(mse=0.5, l1=0.0, hole_mse=2.0, hole_l1=3.0))
  loss, terms = reconstruction.reconstruction_loss(jnp.asarray(out), jnp.asarray(target), jnp.asarray(masks), weights)
  expected = 0.5 * terms["mse"] + 2.0 * terms["hole_mse"] + 3.0 * terms["hole_l1"]
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown reconstruction loss"):
    reconstruction.reconstruction_loss(out, target, masks, ml_collections.ConfigDict(dict(ssim=1.0)))


def test_no_hole_gives_zero_hole_loss():
  out, target, _ = _random_batch(2)
  terms = reconstruction.reconstruction_terms(jnp.asarray(out), jnp.asarray(target), jnp.ones(out.shape[:-1] + (1,)))
  assert float(terms["hole_mse"]) == 0.0 and np.isfinite(float(terms["hole_l1"]))


def _config(**opt):
  config = defaults.base_config()
  config.num_train_steps = 100
  config.learning_rate = 1.0
  config.optimizer.update(opt)
  return config


def test_schedules():
  constant = optim.create_schedule(_config())
  assert float(constant(0)) == float(constant(99)) == 1.0
  cosine = optim.create_schedule(_config(schedule="cosine", warmup_steps=10))
  np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(100)], [0.0, 0.5, 1.0, 0.0], atol=1e-6)
  # pix2pix: constant, then linear to zero at the end.
  decay = optim.create_schedule(_config(schedule="linear_decay", decay_start_step=50))
  np.testing.assert_allclose([decay(0), decay(50), decay(75), decay(100)], [1.0, 1.0, 0.5, 0.0], atol=1e-6)


def test_gradient_clipping():
  tx = optim.create_optimizer(_config(grad_clip_norm=1e-3))
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.full(3, 100.0)}, tx.init(params), params)
  assert np.all(np.isfinite(updates["w"]))  # adam normalises; clipping must not break it
  clip_only = optim.create_optimizer(_config(grad_clip_norm=1e-3, schedule="constant"))
  assert len(clip_only.init(params)) == 2  # clip + adam chained


@pytest.mark.parametrize("bad,match", [(dict(schedule="step"), "schedule"), (dict(warmup_steps=1000), "warmup"),
                                       (dict(schedule="linear_decay", decay_start_step=100), "decay_start_step")])
def test_bad_optimizer_config(bad, match):
  with pytest.raises(ValueError, match=match):
    optim.validate_config(_config(**bad))
