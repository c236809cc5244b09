"""LSGAN semantic inpainting + AE refiner (seed 003): config, task pieces and the staged driver run
on mock CelebA at 16x16."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxpaint import checkpointing, data, parallel, steps, train
from jaxpaint.steps import lsgan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16


def load_config() -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("lsgan_config", os.path.join(REPO, "configs", "lsgan.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(data_dir: str, gan_steps: int = 2, refiner_steps: int = 2) -> ml_collections.ConfigDict:
  """configs/lsgan.py shrunk to 16x16, tiny networks and a few search iterations."""
  config = load_config()
  config.batch_size = 4
  config.image_size = SIZE
  config.data.data_dir = data_dir
  config.data.num_eval_images = 4
  config.mask.size = 8
  config.model.update(latent_dim=8, g_base_features=16, d_base_features=4, d_layers=2,
                      refiner_features=(4, 8))
  config.latent_search.update(num_candidates=2, num_steps=3, train_num_candidates=1, train_num_steps=2)
  config.log_every_steps = 1
  config.stage_overrides.gan.update(num_train_steps=gan_steps, eval_every_steps=100,
                                    checkpoint_every_steps=2)
  config.stage_overrides.refiner.update(num_train_steps=refiner_steps, eval_every_steps=100,
                                        checkpoint_every_steps=2)
  return config


# ---- config -----------------------------------------------------------------------------

def test_config_loads_and_every_stage_validates():
  config = load_config()
  assert config.data.name == "celeb_a" and config.image_size == 64 and config.batch_size == 64
  assert (config.mask.kind, config.mask.size) == ("centre", 32)
  assert tuple(config.stages) == ("gan", "refiner")
  config.data.name = "samples"  # validate without touching CelebA
  gan, refiner = (train.stage_config(config, s) for s in config.stages)
  for stage_config in (gan, refiner):
    train.validate_config(stage_config)
    lsgan.check_config(stage_config)
  assert gan.num_train_steps >= 20_000 and gan.stage == "gan"
  assert 2_000 <= refiner.num_train_steps <= 20_000 and refiner.stage == "refiner"
  assert (gan.learning_rate, gan.optimizer.b1) == (2e-4, 0.5)
  assert refiner.learning_rate != gan.learning_rate and refiner.optimizer.b1 == 0.9
  assert lsgan.SearchSettings.from_config(gan) == lsgan.SearchSettings()
  # The full-size networks are seed 003's: D sees 4x4x512 = 8192 features.
  task = steps.build_task(gan, 3)
  sample = jax.ShapeDtypeStruct((64, 64, 64, 3), jnp.float32)
  state = jax.eval_shape(task.init_state, jax.random.key(0), sample)
  assert state.discriminator.params["Dense_0"]["kernel"].shape == (8192, 1)
  assert state.generator.params["Dense_0"]["kernel"].shape == (100, 4 * 4 * 1024)


def test_default_command_fails_fast_without_celeba(tmp_path):
  config = load_config()
  config.data.data_dir = str(tmp_path / "tfds")
  with pytest.raises(data.DatasetNotPreparedError, match="celeb_a"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "gan")  # nothing ran, nothing was written


@pytest.mark.parametrize("overrides,match", [
    ({"latent_search.window": 4}, "window"),
    ({"latent_search.optimizer": "sgd"}, "optimizer"),
    ({"latent_search.train_num_candidates": 0}, "train_num_candidates"),
    ({"loss.gan": "hinge"}, "perceptual"),
    ({"compute_dtype": "float16"}, "compute_dtype"),
    ({"model.latent_distribution": "cauchy"}, "latent_distribution"),
    ({"stage_overrides.refiner.model": {"refiner_features": (4, 8, 16, 32, 64)}}, "refiner_features"),
])
def test_bad_settings_are_refused_when_stage_one_is_built(tmp_path, overrides, match):
  config = tiny_config(str(tmp_path))
  for key, value in overrides.items():
    if key == "stage_overrides.refiner.model":
      config.stage_overrides.refiner.model = value
    else:
      config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=match):
    steps.build_task(train.stage_config(config, "gan"), 3)


def test_refiner_without_gan_and_unknown_stage_are_refused(tmp_path):
  config = tiny_config(str(tmp_path))
  with pytest.raises(ValueError, match="run_stages=gan"):
    steps.build_task(train.stage_config(config, "refiner"), 3, previous={})
  config.stages = ("gan", "polish")
  with pytest.raises(ValueError, match="stage"):
    steps.build_task(train.stage_config(config, "polish"), 3)


# ---- the latent search through the task ---------------------------------------------------

def test_task_inpaint_fits_the_context_within_the_box(tmp_path):
  config = tiny_config(str(tmp_path))
  config.stages = ()
  config.latent_search.update(num_candidates=4, num_steps=40, learning_rate=0.05)
  task = steps.build_task(config, 3)
  assert isinstance(task, lsgan.LSGANTask) and task.eval_outputs == ("lsgan",)
  key = jax.random.key(0, impl="rbg")
  state = task.init_state(key, jnp.zeros((4, SIZE, SIZE, 3)))
  g_vars = lsgan.frozen_gan(state)["generator"]
  # Targets G(z*) with z* inside the box: a perfect fit exists.
  z_star = jax.random.uniform(jax.random.key(1, impl="rbg"), (4, 8), minval=-0.8, maxval=0.8)
  images = task.generator.apply(g_vars, z_star, train=False)
  masks = jnp.ones((4, SIZE, SIZE, 1)).at[:, 4:12, 4:12].set(0.0)
  garbage = images + 5.0 * (1.0 - masks) * jax.random.normal(jax.random.key(2, impl="rbg"), images.shape)

  @jax.jit
  def run(state, images, garbage, rng):
    return task.latent_search(state, images, masks, rng), task.inpaint(state, garbage, masks, rng)

  # inpaint gets images whose holes hold garbage: it must not see them (same result).
  found, out = run(state, images, garbage, jax.random.key(3, impl="rbg"))
  history = np.asarray(found["contextual_history"])
  final = np.asarray(found["contextual_best"])
  assert np.all(np.isfinite(history)) and final.mean() < 0.3 * history[0]
  assert np.abs(np.asarray(found["z_candidates"])).max() <= 1.0 + 1e-6
  # Outputs: known pixels kept exactly, the hole from G(z_best) (eval-mode BatchNorm).
  raw = np.asarray(task.generator.apply(g_vars, found["z_best"], train=False))
  np.testing.assert_allclose(out["lsgan_raw"], raw, atol=1e-5)
  lsgan_out, known = np.asarray(out["lsgan"]), np.asarray(masks, bool)[..., 0]
  np.testing.assert_array_equal(lsgan_out[known], np.asarray(images)[known])
  np.testing.assert_allclose(lsgan_out[~known], raw[~known], atol=1e-5)
  z = task.sample_latents(jax.random.key(4, impl="rbg"), 256)
  assert z.shape == (256, 8) and float(z.min()) >= -1.0 and float(z.max()) <= 1.0 and float(z.std()) > 0.5


def test_bfloat16_steps_track_float32(tmp_path):
  """bf16 compute with float32 master weights: same init, losses within a few percent."""
  def run(dtype):
    config = tiny_config(str(tmp_path))
    config.compute_dtype = dtype
    gan_config, ref_config = (train.stage_config(config, s) for s in ("gan", "refiner"))
    gan_task = steps.build_task(gan_config, 3)
    images = jax.random.uniform(jax.random.key(5, impl="rbg"), (4, SIZE, SIZE, 3), minval=-1, maxval=1)
    state = gan_task.init_state(jax.random.key(0, impl="rbg"), images)
    gan_losses = []
    step = jax.jit(gan_task.train_step)
    for i in range(3):
      state, metrics = step(state, images, jax.random.key(10 + i, impl="rbg"))
      gan_losses.append([float(metrics["d_loss"]), float(metrics["g_loss"])])
    ref_task = steps.build_task(ref_config, 3, previous={"gan": state})
    ref_state = ref_task.init_state(jax.random.key(1, impl="rbg"), images)
    ref_state, ref_metrics = jax.jit(ref_task.train_step)(ref_state, images, jax.random.key(20, impl="rbg"))
    dtypes = {x.dtype for x in jax.tree.leaves((state.generator.params, ref_state.refiner.params))}
    return np.array(gan_losses), float(ref_metrics["loss"]), dtypes

  gan32, ref32, dtypes32 = run("float32")
  gan16, ref16, dtypes16 = run("bfloat16")
  assert dtypes32 == dtypes16 == {np.dtype("float32")}  # master weights stay float32
  np.testing.assert_allclose(gan16, gan32, rtol=0.05)
  assert not np.array_equal(gan16, gan32)  # bf16 really was used
  assert ref16 == pytest.approx(ref32, rel=0.05) and ref16 != ref32


# ---- the staged driver run ----------------------------------------------------------------

def _restore(stage_dir, task, config):
  """(step, state) of the newest checkpoint in stage_dir, restored into task's state structure."""
  state, step = checkpointing.restore_newest(task, config, 3, os.path.join(stage_dir, "checkpoints"),
                                             parallel.create_mesh())
  return step, state


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
  """The staged command, cut and resumed: gan alone for 1 of 2 steps; the refiner alone
  (refused: its GAN is unfinished); gan alone again (resumes, finishes); everything."""
  root = tmp_path_factory.mktemp("lsgan")
  workdir, data_dir = str(root / "run"), str(root / "tfds")
  out = {"workdir": workdir}

  def config(run_stages=(), gan_steps=2):
    config = tiny_config(data_dir, gan_steps=gan_steps, refiner_steps=2)
    config.run_stages = run_stages
    return config

  with tfds.testing.mock_data(num_examples=8):
    out["gan_cut"] = train.train_and_evaluate(config(("gan",), gan_steps=1), workdir)
    with pytest.raises(ValueError, match=r"stage 'gan' is not finished \(1 of 2") as error:
      train.train_and_evaluate(config(("refiner",)), workdir)
    out["refused"] = str(error.value)
    out["refiner_dir_after_refusal"] = os.path.exists(os.path.join(workdir, "refiner"))
    out["gan"] = train.train_and_evaluate(config(("gan",)), workdir)
    out["all"] = train.train_and_evaluate(config(), workdir)
  return out


def test_stage_one_trains_alone_and_resumes_inside_the_stage(staged):
  cut, gan = staged["gan_cut"], staged["gan"]
  assert list(cut["stages"]) == list(gan["stages"]) == ["gan"]
  assert [s for s, _ in cut["train"]] == [1] and [s for s, _ in gan["train"]] == [2]
  for _, metrics in cut["train"] + gan["train"]:
    for key in ("train/d_loss", "train/g_loss", "train/d_grad_norm", "train/g_grad_norm"):
      assert np.isfinite(metrics[key]) and metrics[key] > 0, key
  summary = gan["eval"]["summary"]
  assert gan["eval"]["step"] == 2 and set(summary) == {"masked_input", "lsgan"}
  assert np.isfinite(summary["lsgan"]["hole_mse"])


def test_refiner_before_a_finished_gan_is_refused_clearly(staged):
  assert "run_stages=gan" in staged["refused"]
  assert not staged["refiner_dir_after_refusal"]


def test_full_run_trains_only_the_refiner_on_the_finished_gan(staged):
  result = staged["all"]
  assert result["stages"]["gan"]["train"] == []  # finished: no more steps
  assert [s for s, _ in result["train"]] == [1, 2]
  for _, metrics in result["train"]:
    for key in ("train/loss", "train/hole_mse", "train/completion_hole_mse", "train/search_contextual"):
      assert np.isfinite(metrics[key]), key
  workdir = staged["workdir"]
  with open(os.path.join(workdir, "refiner", "eval", "latest.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 2 and set(saved["summary"]) == {"masked_input", "lsgan", "refined"}
  for name in ("lsgan", "refined"):
    assert np.isfinite(saved["summary"][name]["hole_psnr"]), name
  # Same eval images, masks and search RNG as stage 1's last eval, with stage 1's final GAN.
  assert saved["summary"]["lsgan"] == pytest.approx(staged["gan"]["eval"]["summary"]["lsgan"], rel=1e-3)
  assert os.path.exists(os.path.join(workdir, "refiner", "images", "latest.png"))

  # Checkpoints restore; training moved the weights whose initial values are fixed (BatchNorm
  # scales start at 1, D's first bias at 0); the refiner holds stage 1's final GAN, frozen.
  config = tiny_config(os.path.join(workdir, "unused"))
  gan_cfg, ref_cfg = (train.stage_config(config, s) for s in ("gan", "refiner"))
  step, gan_state = _restore(os.path.join(workdir, "gan"), steps.build_task(gan_cfg, 3), gan_cfg)
  assert step == 2
  assert not np.allclose(gan_state.generator.params["BatchNorm_0"]["scale"], 1.0)
  assert not np.allclose(gan_state.discriminator.params["Conv_0"]["bias"], 0.0)
  task = steps.build_task(ref_cfg, 3, previous={"gan": gan_state})
  step, ref_state = _restore(os.path.join(workdir, "refiner"), task, ref_cfg)
  assert step == 2 and isinstance(ref_state, lsgan.RefinerState) and int(ref_state.step) == 2
  for a, b in zip(jax.tree.leaves(lsgan.frozen_gan(gan_state)), jax.tree.leaves(ref_state.gan)):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(ref_state.refiner.params["BatchNorm_0"]["scale"], 1.0)
