"""The driver end to end on the built-in `samples` data: files, resume, SIGTERM, NaN, bad configs,
and 1 vs 8 (forced CPU) devices."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from jaxpaint import checkpointing, defaults, parallel, steps, train
from jaxpaint.losses import reconstruction

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(num_train_steps=6):
  """A U-Net small enough to compile and train in seconds on one CPU core."""
  config = defaults.base_config()
  config.batch_size = 8
  config.image_size = 16
  config.num_train_steps = num_train_steps
  config.learning_rate = 3e-3
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.data.name = "samples"
  config.data.num_eval_images = 12  # one full and one padded eval batch
  config.mask.kind = "boxes"
  config.mask.num_boxes = 1
  config.mask.box_size = 6
  config.model = defaults.unet_model_config()
  config.model.update(features=4, depth=2, dropout_rate=0.1)
  config.loss = reconstruction.default_config()
  return config


def _losses(result):
  return np.array([metrics["train/loss"] for _, metrics in result["train"]])


def _final_params(workdir, config):
  task = steps.build_task(config, channels=3)
  restored, step = checkpointing.restore_newest(task, config, 3, os.path.join(workdir, "checkpoints"),
                                                parallel.create_mesh())
  return step, restored.params


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


def test_run_writes_everything_a_user_looks_at(uninterrupted):
  workdir, result = uninterrupted
  assert [step for step, _ in result["train"]] == [1, 2, 3, 4, 5, 6]
  assert np.all(np.isfinite(_losses(result)))
  with open(os.path.join(workdir, "eval", "latest.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 6 and saved["num_images"] == 12
  summary = saved["summary"]
  assert set(summary) == {"masked_input", "composite"}
  for key in ("mse", "psnr", "ssim", "hole_mse", "hole_psnr", "hole_ssim", "ssim_as_(ssim+1)/2"):
    assert np.isfinite(summary["composite"][key]), key
  # The composite keeps known pixels, so its whole-image error is below the hole error.
  assert summary["composite"]["mse"] < summary["composite"]["hole_mse"]
  for name in ("step_00000003.json", "step_00000006.json"):
    assert os.path.exists(os.path.join(workdir, "eval", name))
  from PIL import Image
  grid = np.asarray(Image.open(os.path.join(workdir, "images", "latest.png")))
  assert grid.ndim == 3 and grid.shape[0] > 8 * 16 and grid.std() > 5  # 8 rows of real pictures
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))


def test_resume_continues_exactly(uninterrupted, tmp_path):
  workdir, full = uninterrupted
  first = train.train_and_evaluate(tiny_config(num_train_steps=3), str(tmp_path))
  second = train.train_and_evaluate(tiny_config(num_train_steps=6), str(tmp_path))
  assert [s for s, _ in second["train"]] == [4, 5, 6]
  resumed = np.concatenate([_losses(first), _losses(second)])
  np.testing.assert_allclose(resumed, _losses(full), rtol=1e-5, atol=1e-7)
  step_a, params_a = _final_params(workdir, tiny_config())
  step_b, params_b = _final_params(str(tmp_path), tiny_config())
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for name, values in full["eval"]["summary"].items():
    assert second["eval"]["summary"][name] == pytest.approx(values, rel=1e-4), name


def test_bfloat16_run_tracks_float32_losses(uninterrupted, tmp_path):
  _, float32 = uninterrupted
  config = tiny_config()
  config.compute_dtype = "bfloat16"
  bfloat16 = train.train_and_evaluate(config, str(tmp_path))
  # Same data, masks and initial weights: bf16 activations move the losses by well under 5%.
  np.testing.assert_allclose(_losses(bfloat16), _losses(float32), rtol=0.05)
  assert not np.array_equal(_losses(bfloat16), _losses(float32))  # bf16 really was used


def test_rerun_with_another_model_is_refused_clearly(uninterrupted):
  workdir, _ = uninterrupted
  config = tiny_config(num_train_steps=8)
  config.model.features = 8
  with open(os.path.join(workdir, "config.json")) as f:
    saved_config = f.read()
  with pytest.raises(ValueError, match=r"different model or optimiser.*checkpoint \(4,\) vs model \(8,\)"):
    train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert f.read() == saved_config  # the run's record is not overwritten by the refused one


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  config = tiny_config(num_train_steps=10_000)
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 1000
  workdir = str(tmp_path)

  def send_sigterm_once_training():
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(workdir, "config.json")):
      time.sleep(0.2)
    time.sleep(8)  # past compilation, into the loop
    os.kill(os.getpid(), signal.SIGTERM)

  thread = threading.Thread(target=send_sigterm_once_training, daemon=True)
  thread.start()
  result = train.train_and_evaluate(config, workdir)
  thread.join()
  stopped_at = result["train"][-1][0]
  assert 1 <= stopped_at < 10_000
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(stopped_at)]
  # The default handler is back: the next SIGTERM would end the process as usual.
  assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch):
  build = steps.build_task

  def poisoned(config, channels, previous=None):
    task = build(config, channels, previous)
    clean_step = task.train_step

    def train_step(state, images, rng):
      new_state, metrics = clean_step(state, images, rng)
      metrics["loss"] = jax.numpy.where(state.step >= 4, jax.numpy.nan, metrics["loss"])
      return new_state, metrics

    task.train_step = train_step
    return task

  monkeypatch.setattr(steps, "build_task", poisoned)
  with pytest.raises(train.NonFiniteLossError, match=r"step 5.*Last good checkpoint: step 3"):
    train.train_and_evaluate(tiny_config(num_train_steps=9), str(tmp_path))
  assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["3"]


@pytest.mark.parametrize("overrides,match", [
    ({"image_size": 18}, "not divisible by 2\\*\\*depth"),
    ({"mask.kind": "stars"}, "stars"),
    ({"num_train_steps": 0}, "num_train_steps"),
    ({"data.name": "imagenet"}, "imagenet"),
    ({"compute_dtype": "float16"}, "compute_dtype"),
])
def test_bad_config_is_refused_before_training(tmp_path, overrides, match):
  config = tiny_config()
  config.update_from_flattened_dict(overrides)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    sys.path.insert(0, {tests!r})
    from {module} import {config_fn} as make_config
    from jaxpaint import train
    assert jax.device_count() == {devices}, jax.devices()
    result = train.train_and_evaluate(make_config(), {workdir!r})
    errors = []
    if {devices} > 1:
      config = make_config()
      config.batch_size = {devices} + 1
      try:
        train.validate_config(config)
      except ValueError as e:
        errors.append(str(e))
    print("RESULT" + json.dumps({{"losses": [m["train/loss"] for _, m in result["train"]],
                                 "eval": result["eval"]["summary"], "errors": errors}}))
""")


def run_on_devices(devices, workdir, module="test_train", config_fn="tiny_config"):
  """Trains ``module.config_fn()`` in a fresh process with ``devices`` forced CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  script = MULTI_DEVICE_SCRIPT.format(tests=os.path.join(REPO, "tests"), devices=devices, workdir=workdir,
                                      module=module, config_fn=config_fn)
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


@pytest.mark.slow
def test_one_and_eight_devices_train_alike(tmp_path):
  one = run_on_devices(1, str(tmp_path / "one"))
  eight = run_on_devices(8, str(tmp_path / "eight"))
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)
  for name in one["eval"]:
    assert eight["eval"][name] == pytest.approx(one["eval"][name], rel=1e-3), name
  assert eight["errors"] and "not divisible by the 8 devices" in eight["errors"][0]
