"""The comparison command on tiny trained workdirs (one plain, one staged): same images and
masks for every model, table rows, files, and the refusals."""

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxpaint import evaluate, steps, train, visualize
from test_train import tiny_config


def _staged_config():
  """Two U-Net stages: a (seed 1), then b (seed 2, wider)."""
  config = tiny_config(num_train_steps=3)
  config.seed = 1
  config.stages = ("a", "b")
  config.stage_overrides = {"b": {"seed": 2, "model": {"features": 6}}}
  return config


def _eval_config():
  """Stage a's own setting (seed 1), without the stages."""
  config = tiny_config(num_train_steps=3)
  config.seed = 1
  return config


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """A staged workdir, and a plain one made from a copy of its stage a."""
  root = tmp_path_factory.mktemp("evaluate")
  plain, staged = str(root / "plain"), str(root / "staged")
  train.train_and_evaluate(_staged_config(), staged)
  shutil.copytree(os.path.join(staged, "a"), plain)
  with open(os.path.join(plain, "config.json")) as f:
    saved = json.load(f)
  for key in ("stages", "stage", "stage_overrides"):
    del saved[key]
  with open(os.path.join(plain, "config.json"), "w") as f:
    json.dump(saved, f)
  return plain, staged


@pytest.fixture(scope="module")
def compared(workdirs, tmp_path_factory):
  output = str(tmp_path_factory.mktemp("comparison"))
  build = steps.build_task

  def two_outputs_for_stage_b(config, channels, previous=None):
    task = build(config, channels, previous)
    if config.get("stage") == "b":  # a model scoring two outputs, like LSGAN's refiner stage
      task.eval_outputs = ("composite", "output")
    return task

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(steps, "build_task", two_outputs_for_stage_b)
    comparison = evaluate.compare(list(workdirs), _eval_config(), output,
                                  names=["plain", "staged"])
  return comparison, output


def _own_eval(workdir):
  with open(os.path.join(workdir, "eval", "latest.json")) as f:
    return json.load(f)


def test_rows_match_each_models_own_evaluation_on_the_same_masks(workdirs, compared):
  plain, staged = workdirs
  comparison, _ = compared
  rows = comparison["rows"]
  assert [r["name"] for r in rows] == ["masked input", "plain", "staged:composite",
                                       "staged:output"]
  assert [r["output"] for r in rows] == ["masked_input", "composite", "composite", "output"]
  assert [r["step"] for r in rows] == [None, 3, 3, 3]
  assert rows[2]["stage"] == "b" and rows[1]["model"] == rows[2]["model"] == "unet"
  for row in rows:
    for metric in evaluate.METRICS:
      assert np.isfinite(row[metric]), (row["name"], metric)
  # Plain (= stage a): evaluated with its own setting, so exactly its driver evaluation.
  own = _own_eval(plain)["summary"]
  for metric in evaluate.METRICS:
    assert rows[1][metric] == pytest.approx(own["composite"][metric], rel=1e-5), metric
    assert rows[0][metric] == pytest.approx(own["masked_input"][metric], rel=1e-5), metric
  # The raw output is scored on its own: it changes known pixels, the composite does not.
  assert rows[3]["mse"] > rows[2]["mse"]
  assert rows[3]["hole_mse"] == pytest.approx(rows[2]["hole_mse"], rel=1e-5)
  # Staged (final stage b, seed 2): scored on the evaluation config's masks, not its own.
  per_model = comparison["masked_input_per_model"]
  assert per_model["staged"] == pytest.approx(per_model["plain"], rel=1e-6)
  staged_own = _own_eval(os.path.join(staged, "b"))["summary"]["masked_input"]
  assert staged_own["hole_mse"] != pytest.approx(per_model["staged"]["hole_mse"], rel=1e-3)
  assert comparison["eval"]["num_images"] == 12
  assert comparison["eval"]["mask"]["kind"] == "boxes"


def test_files_written(compared):
  comparison, output = compared
  with open(os.path.join(output, "comparison.json")) as f:
    assert json.load(f)["rows"][1]["psnr"] == pytest.approx(comparison["rows"][1]["psnr"])
  with open(os.path.join(output, "comparison.md")) as f:
    table = f.read()
  lines = [l for l in table.splitlines() if l.startswith("| ")]
  assert len(lines) == 5  # header + 4 rows
  assert lines[1].startswith("| masked input |") and lines[2].startswith("| plain (unet) | 3 |")
  assert lines[4].startswith("| staged:output (unet) | 3 |")
  assert f"{comparison['rows'][2]['hole_psnr']:.2f}" in lines[3]
  grid = np.asarray(Image.open(os.path.join(output, "comparison.png")))
  names = ("input", "mask", "plain", "staged:composite", "staged:output", "target")
  expected = visualize.make_grid({n: np.zeros((8, 16, 16, 3), np.float32) for n in names})
  assert grid.shape == expected.shape and grid.std() > 5
  for name in ("plain", "staged"):
    assert os.path.exists(os.path.join(output, name, "eval", "latest.json"))
    assert os.path.exists(os.path.join(output, name, "images", "latest.png"))


def test_stage_resolution(workdirs):
  plain, staged = workdirs
  assert [s.directory for s in evaluate.resolve_stages(plain)] == [plain]
  dirs = [os.path.join(staged, "a"), os.path.join(staged, "b")]
  assert [s.directory for s in evaluate.resolve_stages(staged)] == dirs
  assert [s.directory for s in evaluate.resolve_stages(dirs[1])] == dirs
  assert [s.directory for s in evaluate.resolve_stages(dirs[0])] == dirs[:1]
  assert evaluate.resolve_stages(staged)[1].config.model.features == 6


def test_refusals(workdirs, tmp_path):
  plain, _ = workdirs
  config = _eval_config()
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  shutil.copy(os.path.join(plain, "config.json"), no_ckpt / "config.json")
  with pytest.raises(ValueError, match="has no checkpoints"):
    evaluate.compare([plain, str(no_ckpt)], config, str(tmp_path / "out"))

  bigger = tiny_config(num_train_steps=3)
  bigger.image_size = 32
  with pytest.raises(ValueError, match=r"trained on 16x16 images .* uses 32x32"):
    evaluate.compare([plain], bigger, str(tmp_path / "out"))

  gray = tmp_path / "gray"
  gray.mkdir()
  saved = json.load(open(os.path.join(plain, "config.json")))
  saved["data"]["name"] = "mnist"
  json.dump(saved, open(gray / "config.json", "w"))
  with pytest.raises(ValueError, match="makes 1-channel images .* has 3"):
    evaluate.compare([str(gray)], config, str(tmp_path / "out"))

  with pytest.raises(ValueError, match="does not exist"):
    evaluate.compare([str(tmp_path / "missing")], config, str(tmp_path / "out"))
  with pytest.raises(ValueError, match="its sub-directory 'gray' has one"):
    evaluate.compare([str(tmp_path)], config, str(tmp_path / "out"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="holds no config.json"):
    evaluate.compare([str(tmp_path / "empty")], config, str(tmp_path / "out"))
  with pytest.raises(ValueError, match="one name per workdir"):
    evaluate.compare([plain], config, str(tmp_path / "out"), names=["a", "b"])
  with pytest.raises(ValueError, match="repeat"):
    evaluate.compare([plain, plain], config, str(tmp_path / "out"), names=["a", "a"])
  assert not os.path.exists(tmp_path / "out")  # refused before anything was written
