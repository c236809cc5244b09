"""Smoke test of the benchmark harness (benchmarks/): one tiny model, two timed steps, JSON out.

No timing is asserted, only that the harness measures, records and skips what it should.
"""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from benchmarks import harness, registry, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_settings_scale_pixels_and_fit_depth():
  config = ml_collections.ConfigDict(dict(  # pix2pix's geometry
      batch_size=1, image_size=256, compute_dtype="float32", jitter_size=286,
      mask=dict(kind="boxes", num_boxes=2, box_size=75, box_max_size=0),
      model=dict(name="pix2pix", num_downs=8, base_features=64, d_base_features=64,
                 dropout_rate=0.5, refiner_features=(64, 128))))
  changed, changes = harness.apply_settings(config, harness.Settings(
      batch_size=3, image_size=64, compute_dtype="bfloat16", width_scale=0.25,
      sets=(("model.dropout_rate", 0.0), ("no.such_key", 1))))
  assert (changed.batch_size, changed.image_size, changed.compute_dtype) == (3, 64, "bfloat16")
  assert changed.model.num_downs == 6  # 64 = 2**6: the 1x1 bottleneck of unet_256 at 64 px
  assert changed.mask.box_size == 19 and changed.jitter_size == 72  # 75 and 286 scaled by 1/4
  assert changed.model.base_features == 16 and changed.model.d_base_features == 16
  assert tuple(changed.model.refiner_features) == (16, 32)
  assert changed.model.dropout_rate == 0.0
  assert changes["model.num_downs"] == 6 and "no.such_key" not in changes
  assert config.image_size == 256 and config.model.num_downs == 8  # the original is untouched
  with pytest.raises(ValueError, match="key.path=value"):
    harness.parse_sets(["model.features"])
  assert harness.parse_sets(["model.partial=False", "mask.kind=boxes"]) == (
      ("model.partial", False), ("mask.kind", "boxes"))


def test_peak_table_and_missing_config():
  assert harness.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert harness.peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert harness.peak_tflops("cpu") is None
  assert harness.peak_tflops("cpu", override=1.5) == 1.5
  record = run.benchmark(registry.Spec("ghost", "no_such_config.py", "absent"), 2, "float32")
  assert record["status"] == "not available"
  assert "configs/no_such_config.py does not exist" in record["reason"]
  comp = run.comparisons([
      {"model": "pconv", "status": "ok", "compute_dtype": "float32", "batch_size": 2,
       "image_size": 32, "step_ms_median": 12.0},
      {"model": "pconv_plain", "status": "ok", "compute_dtype": "float32", "batch_size": 2,
       "image_size": 32, "step_ms_median": 10.0}])
  assert comp["issue3_pconv"][0]["pconv_over_plain_time"] == pytest.approx(1.2)


def test_cli_times_a_tiny_unet_and_writes_json(tmp_path):
  out = tmp_path / "bench.json"
  cmd = [sys.executable, "-m", "benchmarks.run", "--models=unet", "--batch_sizes=2",
         "--image_size=16", "--width_scale=0.0625", "--steps=2", "--repeats=1", "--warmup=1",
         "--input_pipeline", "--pipeline_sources=samples,mnist", "--pipeline_batches=2",
         "--tfds_data_dir=" + str(tmp_path / "no_tfds"), f"--output={out}"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "| unet" in proc.stdout

  data = json.loads(out.read_text())
  env_info = data["environment"]
  for key in ("device_kind", "platform", "device_count", "date", "jax", "flax", "git_commit", "command"):
    assert env_info[key] not in (None, ""), key
  assert env_info["platform"] == "cpu" and "--models=unet" in env_info["command"]
  [r] = data["results"]
  assert r["status"] == "ok" and r["model"] == "unet"
  assert (r["batch_size"], r["image_size"], r["compute_dtype"]) == (2, 16, "float32")
  assert r["model_config"]["features"] == 4  # 64 * 0.0625
  assert r["steps"] == 2 and r["repeats"] == 1 and r["compile_s"] > 0
  s = r["steps_per_s"]
  assert 0 < s["min"] <= s["median"] <= s["max"]
  assert r["images_per_s"]["median"] == pytest.approx(2 * s["median"])
  assert r["flops_per_step"] > 0 and r["num_params"] > 0
  assert r["memory"]["total_bytes"] >= r["memory"]["argument_bytes"] > 0
  assert r["mfu"] is None  # no peak FLOP/s is known for a CPU
  assert r["final_loss_finite"] is True

  pipeline = {p["source"]: p for p in data["input_pipeline"]["results"]}
  assert pipeline["samples"]["status"] == "ok"
  assert pipeline["samples"]["batch_shape"] == [2, 16, 16, 3]
  assert pipeline["samples"]["ratio_to_step"]["unet/float32"] > 0
  assert pipeline["mnist"]["status"] == "not prepared"
  assert data["input_pipeline"]["masks"][0]["masks_per_s"] > 0


def test_interleaved_timing_is_round_robin():
  order = []
  timers = {name: (lambda steps, name=name: order.append((name, steps)) or float(len(order)))
            for name in ("jaxpaint", "eager")}
  rates = harness.time_interleaved(timers, steps=2, repeats=3)
  assert order == [("jaxpaint", 2), ("eager", 2)] * 3
  assert rates == {"jaxpaint": [1.0, 3.0, 5.0], "eager": [2.0, 4.0, 6.0]}
