"""VAE-GAN on the driver: the per-network gradient split against a direct float32 reference,
the KL term, sampled completions, and a tiny end-to-end run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpaint import defaults, masks, steps, train
from jaxpaint.models import vaegan as models
from jaxpaint.steps import vaegan as vgt

SIZE, BATCH = 16, 4
WEIGHTS = dict(kl_weight=0.3, feature_weight=0.7, decoder_feature_weight=0.2, pixel_weight=1.3,
               hole_pixel_weight=0.4, adv_weight=0.5)


def tiny_config(num_train_steps=3):
  config = defaults.base_config()
  config.update(vgt.default_config())
  config.batch_size = BATCH
  config.image_size = SIZE
  config.num_train_steps = num_train_steps
  config.log_every_steps = 1
  config.eval_every_steps = num_train_steps
  config.checkpoint_every_steps = num_train_steps
  config.data.name = "samples"
  config.data.num_eval_images = 6
  config.model.update(latent_dim=4, encoder_features=(4, 8), encoder_hidden=8,
                      decoder_features=(8, 4), kernel_size=3, d_first_features=4,
                      d_features=(4, 8), d_hidden=8)
  config.mask.kind = "centre"
  config.mask.size = 8
  return config


def _key(seed):
  return jax.random.key(seed, impl="rbg")  # fast to compile on CPU


def _images(seed, batch=BATCH):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


def _sgd_task():
  """The tiny task with SGD at rate 1, so a step's parameter change is minus its gradient."""
  config = tiny_config()
  built = steps.build_task(config, 3)
  mask_fn = masks.make_mask_fn(config.mask, SIZE, SIZE)
  return vgt.VAEGANTask(built.generator, built.discriminator, optax.sgd(1.0), optax.sgd(1.0),
                        mask_fn, **WEIGHTS)


def _reference_gradients(task, g, d_vars, batch, rng):
  """Larsen's per-network objectives, each differentiated in its own network's parameters only.

  Written directly with module.apply; shares nothing with the task but the networks.
  """
  real, known = batch["real"], batch["masks"]
  latent_rng, prior_rng = jax.random.split(rng)
  w = WEIGHTS

  def gen(params, method, *args):
    out, _ = task.generator.apply({"params": params, "batch_stats": g.batch_stats}, *args,
                                  train=True, method=method, mutable=["batch_stats"])
    return out

  def disc(x):
    out, _ = task.discriminator.apply(d_vars, x, train=True, mutable=["batch_stats"])
    return out

  _, real_features = disc(real)

  def terms(params):
    mu, logvar = gen(params, models.VAEGANGenerator.encode, real, known)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(latent_rng, mu.shape)
    recon = gen(params, models.VAEGANGenerator.decode, z)
    prior = gen(params, models.VAEGANGenerator.decode, jax.random.normal(prior_rng, mu.shape))
    feature = 0.5 * jnp.mean(jnp.square(disc(recon)[1] - real_features))
    err, k = jnp.abs(recon - real), jnp.broadcast_to(known, real.shape)
    pixel, hole = jnp.sum(err * k) / jnp.sum(k), jnp.sum(err * (1 - k)) / jnp.sum(1 - k)
    kl = jnp.mean(jnp.sum(0.5 * (jnp.exp(logvar) + mu**2 - 1 - logvar), axis=-1))
    adv = jnp.mean(jax.nn.softplus(-disc(jnp.concatenate([recon, prior]))[0]))  # -log sigmoid
    return kl, feature, pixel, hole, adv

  def encoder_objective(p):
    kl, feature, pixel, hole, _ = terms({**g.params, "encoder": p})
    return (w["kl_weight"] * kl + w["feature_weight"] * feature + w["pixel_weight"] * pixel
            + w["hole_pixel_weight"] * hole)

  def decoder_objective(p):
    _, feature, pixel, hole, adv = terms({**g.params, "decoder": p})
    return (w["decoder_feature_weight"] * feature + w["pixel_weight"] * pixel
            + w["hole_pixel_weight"] * hole + w["adv_weight"] * adv)

  def single_objective(p):  # what one weighted total would give the encoder
    kl, feature, pixel, hole, adv = terms({**g.params, "encoder": p})
    return (w["kl_weight"] * kl + (w["feature_weight"] + w["decoder_feature_weight"]) * feature
            + w["pixel_weight"] * pixel + w["hole_pixel_weight"] * hole + w["adv_weight"] * adv)

  return (jax.grad(encoder_objective)(g.params["encoder"]),
          jax.grad(decoder_objective)(g.params["decoder"]),
          jax.grad(single_objective)(g.params["encoder"]))


@pytest.fixture(scope="module")
def split_run():
  task = _sgd_task()
  images = _images(0)

  @jax.jit
  def run(images):
    state = task.init_state(_key(0), images)
    batch = task.prepare_batch(images, _key(1))
    outputs, pullback, g_stats = task.generator_forward(state, batch, _key(2))
    after_d, _ = task.discriminator_step(state, batch, outputs["fake"])
    after_g, metrics = task.generator_step(after_d, batch, outputs, pullback, g_stats)
    d = after_d.discriminator
    reference = _reference_gradients(task, state.generator, {"params": d.params,
                                                             "batch_stats": d.batch_stats},
                                      batch, _key(2))
    return state, after_d, after_g, metrics, reference, outputs

  return run(images)


def test_each_network_gets_its_own_objective(split_run):
  state, after_d, after_g, _, (enc_ref, dec_ref, enc_single), _ = split_run
  grads = jax.tree.map(lambda a, b: a - b, state.generator.params, after_g.generator.params)

  def check(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      scale = float(np.max(np.abs(b)))
      assert scale > 0
      np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * scale)

  check(grads["encoder"], enc_ref)
  check(grads["decoder"], dec_ref)
  # The split matters: one weighted total would give the encoder a different gradient.
  diff = max(float(np.max(np.abs(a - b))) for a, b in
             zip(jax.tree.leaves(enc_single), jax.tree.leaves(enc_ref)))
  assert diff > 0.05 * max(float(np.max(np.abs(b))) for b in jax.tree.leaves(enc_ref))
  # The G step leaves D as the D step made it (D learns from its GAN loss only).
  for a, b in zip(jax.tree.leaves(after_d.discriminator), jax.tree.leaves(after_g.discriminator)):
    np.testing.assert_array_equal(a, b)


def test_metrics_kl_present_and_positive(split_run):
  _, _, _, metrics, _, outputs = split_run
  assert float(metrics["kl"]) > 0
  mu, logvar = np.asarray(outputs["mu"], np.float64), np.asarray(outputs["logvar"], np.float64)
  kl = np.mean(np.sum(0.5 * (np.exp(logvar) + mu**2 - 1 - logvar), axis=-1))
  np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5)
  # Both decodings of z have the same value; the fakes are [recon; prior samples].
  np.testing.assert_allclose(outputs["recon_enc"], outputs["recon"], rtol=1e-6, atol=1e-6)
  assert outputs["fake"].shape == (2 * BATCH, SIZE, SIZE, 3)
  np.testing.assert_array_equal(outputs["fake"][:BATCH], outputs["recon"])
  w = WEIGHTS
  np.testing.assert_allclose(
      metrics["g_loss"], w["adv_weight"] * metrics["g_adv"] + metrics["encoder_loss"]
      + metrics["decoder_loss"], rtol=1e-5)
  for name in ("feature", "pixel", "hole_pixel", "g_adv"):
    assert np.isfinite(metrics[name]) and metrics[name] > 0, name


def test_bad_config_is_refused():
  config = tiny_config()
  config.model.decoder_features = (8, 4, 4, 4, 4)  # 16 is not divisible by 32
  with pytest.raises(ValueError, match="decoder_features"):
    steps.build_task(config, 3)
  config = tiny_config()
  config.loss.kl_weight = -1.0
  with pytest.raises(ValueError, match="kl_weight"):
    steps.build_task(config, 3)
  config = tiny_config()
  config.loss.pixel_loss = "l3"
  with pytest.raises(ValueError, match="pixel_loss"):
    steps.build_task(config, 3)


@pytest.fixture(scope="module")
def driver_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("vaegan"))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


def test_driver_run_trains_and_writes_eval(driver_run):
  workdir, result = driver_run
  assert [s for s, _ in result["train"]] == [1, 2, 3]
  for _, metrics in result["train"]:
    assert np.isfinite(metrics["train/loss"]) and metrics["train/kl"] > 0
  with open(os.path.join(workdir, "eval", "latest.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 3 and saved["num_images"] == 6
  assert set(saved["summary"]) == {"masked_input", "composite"}
  assert saved["mean_hole_ratio"] == pytest.approx(64 / 256)
  assert np.isfinite(saved["summary"]["composite"]["hole_psnr"])
  assert os.path.exists(os.path.join(workdir, "images", "latest.png"))


def test_inpaint_and_sampled_completions_keep_known_pixels():
  task = steps.build_task(tiny_config(), 3)
  images = _images(5)
  known = np.asarray(masks.centre_square(BATCH, SIZE, SIZE, 8))

  @jax.jit
  def run(images, known):
    state = task.init_state(_key(0), images)
    return (task.inpaint(state, images, known, _key(1)),
            task.sample_completions(state, images, known, _key(2), 3))

  out, samples = run(images, known)
  assert samples.shape == (3, BATCH, SIZE, SIZE, 3)
  kept = np.broadcast_to(known[None] == 1, samples.shape)
  np.testing.assert_array_equal(np.asarray(samples)[kept],
                                np.broadcast_to(images[None], samples.shape)[kept])
  hole = ~kept
  # Different latents, different fills.
  assert np.abs(np.asarray(samples[0] - samples[1])[hole[0]]).max() > 1e-4
  for name in ("composite", "sample"):
    np.testing.assert_array_equal(np.asarray(out[name])[known[..., 0] == 1],
                                  images[known[..., 0] == 1])
  np.testing.assert_allclose(np.asarray(out["composite"])[known[..., 0] == 0],
                             np.asarray(out["raw"])[known[..., 0] == 0])


def test_shipped_config_builds_larsens_networks():
  import importlib.util  # noqa: PLC0415
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "vaegan.py")
  spec = importlib.util.spec_from_file_location("vaegan_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  assert (config.image_size, config.mask.kind, config.mask.size) == (64, "centre", 32)
  task = steps.build_task(config, 3)
  images = jax.ShapeDtypeStruct((config.batch_size, 64, 64, 3), jnp.float32)
  state = jax.eval_shape(task.init_state, jax.random.key(0), images)
  g = state.generator.params
  assert g["encoder"]["mu"]["kernel"].shape == (2048, 128)
  assert g["decoder"]["Dense_0"]["kernel"].shape == (128, 8 * 8 * 256)
  _, metrics = jax.eval_shape(task.train_step, state, images, jax.random.key(0))
  assert {"kl", "feature", "pixel", "encoder_loss", "decoder_loss", "g_adv", "d_loss"} <= set(metrics)
