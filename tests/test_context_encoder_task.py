"""Context Encoders on the driver: fixed centre hole, D on the patch, loss weights, the 10x G
learning rate, inpainting without leaks, and tiny end-to-end runs (eval JSON, exact resume)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint import checkpointing, defaults, masks, parallel, steps, train
from jaxpaint.models import context_encoder as models
from jaxpaint.steps import context_encoder as cet

SIZE, PATCH, OVERLAP, BATCH = 16, 8, 2, 4


def tiny_config(num_train_steps=4, seed=0):
  config = defaults.base_config()
  config.update(cet.default_config())
  config.seed = seed
  config.batch_size = BATCH
  config.image_size = SIZE
  config.num_train_steps = num_train_steps
  config.log_every_steps = 1
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.data.name = "samples"
  config.data.num_eval_images = 6  # one full and one padded eval batch
  config.model.update(patch_size=PATCH, overlap=OVERLAP, bottleneck=8, features=4, d_features=4)
  config.mask.kind = "centre"
  config.mask.size = PATCH - 2 * OVERLAP
  return config


def _images(seed, batch=BATCH):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


def test_batch_masks_and_discriminator_inputs_are_patches():
  task = steps.build_task(tiny_config(), 3)
  seen, discriminate = [], task.discriminate

  def recording(d_variables, x, batch, train):  # shapes D is applied to, at trace time
    seen.append(tuple(x.shape))
    return discriminate(d_variables, x, batch, train)

  task.discriminate = recording
  images = _images(0)
  batch = task.prepare_batch(jnp.asarray(images), jax.random.key(1))
  start = (SIZE - PATCH) // 2
  np.testing.assert_array_equal(batch["real"], images[:, start:start + PATCH, start:start + PATCH])
  # The training hole is the config's centre mask: the patch less its ring.
  config_masks = masks.make_mask_fn(tiny_config().mask, SIZE, SIZE)(jax.random.key(0), BATCH)
  np.testing.assert_array_equal(batch["masks"], config_masks)
  hole = np.asarray(batch["masks"][0, ..., 0]) == 0
  inner = slice(start + OVERLAP, start + PATCH - OVERLAP)
  assert hole.sum() == (PATCH - 2 * OVERLAP) ** 2 and hole[inner, inner].all()

  state = jax.eval_shape(task.init_state, jax.random.key(0), images)
  jax.eval_shape(task.train_step, state, images, jax.random.key(0))
  assert seen == [(BATCH, PATCH, PATCH, 3)] * 3  # fake, real (D step); fake (G step)


def test_generator_loss_weights_and_overlap_reference():
  task = steps.build_task(tiny_config(), 3)
  pred, true = _images(1, 3)[:, :PATCH, :PATCH], _images(2, 3)[:, :PATCH, :PATCH]
  extra, terms = task.generator_extra_loss({"fake": pred}, {"real": true}, None, None)
  w = np.ones((PATCH, PATCH, 1))
  w[:OVERLAP], w[-OVERLAP:], w[:, :OVERLAP], w[:, -OVERLAP:] = 10, 10, 10, 10
  sq = (pred.astype(np.float64) - true) ** 2
  rec = np.sum(w * sq) / sq.size  # train.lua: the weights scale MSECriterion's gradient
  np.testing.assert_allclose(terms["rec"], rec, rtol=1e-5)
  np.testing.assert_allclose(extra, 0.999 * rec, rtol=1e-5)
  np.testing.assert_allclose(terms["l2"], sq.mean(), rtol=1e-5)
  np.testing.assert_allclose(terms["hole_l2"], sq[:, OVERLAP:-OVERLAP, OVERLAP:-OVERLAP].mean(),
                             rtol=1e-5)
  assert task.adv_weight == 0.001 and task.gan_kind == "vanilla"


def test_generator_learns_ten_times_faster_by_default():
  grads = {"w": jnp.ones(3)}

  def first_step(tx):  # Adam's first update is -lr * g / (|g| + eps): the learning rate
    return float(-tx.update(grads, tx.init(grads), grads)[0]["w"][0])

  task = steps.build_task(tiny_config(), 3)
  assert first_step(task.d_tx) == pytest.approx(2e-4, rel=1e-4)
  assert first_step(task.g_tx) == pytest.approx(2e-3, rel=1e-4)
  config = tiny_config()
  del config["g_lr_multiplier"]
  config.loss.rec_weight = 1.0  # train.lua's rule: 10x only when 0 < wtl2 < 1
  assert first_step(steps.build_task(config, 3).g_tx) == pytest.approx(2e-4, rel=1e-4)


@pytest.mark.parametrize("change,match", [
    ({"mask.kind": "lines"}, "config.mask.kind='centre' and config.mask.size=4"),
    ({"mask.size": 8}, "config.mask.size=4"),
    ({"model.overlap": 4}, "overlap=4 leaves no hole"),
    ({"model.patch_size": 12}, "power of two"),
    ({"model.mean_colour": "blue"}, "mean_colour"),
    ({"g_lr_multiplier": 0.0}, "g_lr_multiplier"),
])
def test_bad_config_is_refused(change, match):
  config = tiny_config()
  config.update_from_flattened_dict(change)
  with pytest.raises(ValueError, match=match):
    steps.build_task(config, 3)


def test_inpaint_pastes_patch_into_hole_only():
  task = steps.build_task(tiny_config(), 3)
  images = _images(3)
  # The training hole plus a hole outside the patch region (top-left corner).
  known = np.asarray(task.training_masks(BATCH, SIZE)).copy()
  known[:, :2, :2] = 0.0

  @jax.jit
  def run(images, known):
    state = task.init_state(jax.random.key(0), images)
    return task.inpaint(state, images, known, jax.random.key(0)), task.predict_patch(state, images, known)

  out, patch = run(images, known)
  start = (SIZE - PATCH) // 2
  composite, raw, patch = np.asarray(out["composite"]), np.asarray(out["raw"]), np.asarray(patch)
  region = np.zeros((BATCH, SIZE, SIZE), bool)
  region[:, start:start + PATCH, start:start + PATCH] = True
  kept = known[..., 0] == 1
  np.testing.assert_array_equal(composite[kept], images[kept])
  in_patch_hole = ~kept & region
  patch_hole = in_patch_hole[:, start:start + PATCH, start:start + PATCH]
  np.testing.assert_allclose(composite[in_patch_hole], patch[patch_hole], rtol=1e-6)
  # A hole outside the patch keeps the mean-colour fill: the target never shows through.
  np.testing.assert_allclose(composite[:, :2, :2], np.broadcast_to(models.PATHAK_MEAN_COLOUR,
                                                                   (BATCH, 2, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(raw[:, start:start + PATCH, start:start + PATCH], patch, rtol=1e-6)


def _losses(result):
  return np.array([m["train/loss"] for _, m in result["train"]])


@pytest.fixture(scope="module")
def initial_state():
  """The driver's initial state for tiny_config() (same init key), jitted once."""
  config = tiny_config()
  task = steps.build_task(config, 3)
  init_rng = jax.random.split(jax.random.key(config.seed), 3)[0]  # as train._init_state
  return jax.jit(task.init_state)(init_rng, jnp.zeros((BATCH, SIZE, SIZE, 3), jnp.float32))


def _restore(workdir):
  config = tiny_config()
  return checkpointing.restore_newest(steps.build_task(config, 3), config, 3,
                                      os.path.join(workdir, "checkpoints"), parallel.create_mesh())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ce"))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


def test_driver_run_trains_and_writes_eval(uninterrupted, initial_state):
  workdir, result = uninterrupted
  losses = _losses(result)
  assert len(losses) == 4 and np.all(np.isfinite(losses))
  for _, metrics in result["train"]:
    for key in ("train/d_loss", "train/g_adv", "train/rec", "train/l2"):
      assert np.isfinite(metrics[key]), key
    np.testing.assert_allclose(metrics["train/g_loss"],
                               0.001 * metrics["train/g_adv"] + 0.999 * metrics["train/rec"],
                               rtol=1e-5)
  with open(os.path.join(workdir, "eval", "latest.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 4 and saved["num_images"] == 6
  # The evaluated hole is the training hole: 4x4 of 16x16.
  assert saved["mean_hole_ratio"] == pytest.approx(16 / 256)
  composite, blank = saved["summary"]["composite"], saved["summary"]["masked_input"]
  assert np.isfinite(composite["hole_psnr"]) and composite["hole_mse"] != blank["hole_mse"]
  init = initial_state
  final, step = _restore(workdir)
  assert step == 4
  for net in ("generator", "discriminator"):
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(getattr(init, net).params),
                                                     jax.tree.leaves(getattr(final, net).params))]
    assert all(changed), net


def test_resume_continues_exactly(uninterrupted, tmp_path):
  workdir, full = uninterrupted
  first = train.train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
  second = train.train_and_evaluate(tiny_config(num_train_steps=4), str(tmp_path))
  assert [s for s, _ in second["train"]] == [3, 4]
  np.testing.assert_allclose(np.concatenate([_losses(first), _losses(second)]), _losses(full),
                             rtol=1e-5, atol=1e-7)
  (a, _), (b, _) = _restore(workdir), _restore(str(tmp_path))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert second["eval"]["summary"]["composite"] == pytest.approx(
      full["eval"]["summary"]["composite"], rel=1e-4)


def _load_config(name):
  import importlib.util  # noqa: PLC0415
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("name,size,patch,hole", [("context_encoder", 128, 64, 56),
                                                  ("context_encoder_celeba64", 64, 32, 32)])
def test_shipped_configs_build_the_paper_networks(name, size, patch, hole):
  config = _load_config(name)
  task = steps.build_task(config, 3)  # refuses a mask that is not the task's hole
  assert config.image_size == size and config.mask.size == hole and config.batch_size == 64
  images = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32)
  state = jax.eval_shape(task.init_state, jax.random.key(0), images)
  shapes = [leaf.shape for leaf in jax.tree.leaves(state.generator.params)]
  assert (4, 4, 512, 4000) in shapes  # into the code
  assert any(shape[:3] == (4, 4, 4000) for shape in shapes)  # out of it
  masks_ = task.training_masks(1, size)
  assert int(np.sum(np.asarray(masks_) == 0)) == hole * hole
  batch = jax.eval_shape(task.prepare_batch, images, jax.random.key(0))
  assert batch["real"].shape == (64, patch, patch, 3)
