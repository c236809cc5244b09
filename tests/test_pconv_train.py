"""The PConv U-Net through the one driver: paper loss, free-form masks, hole-ratio-bin eval."""

import json
import os

import numpy as np
import pytest

from jaxpaint import defaults, train
from jaxpaint.models.pconv_unet import PConvUNet
from jaxpaint.steps import reconstruction

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def tiny_pconv_config():
  config = defaults.base_config()
  config.batch_size = 4
  config.image_size = 32
  config.num_train_steps = 3
  config.learning_rate = 2e-4
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.eval_hole_ratio_bins = True
  config.data.name = "samples"
  config.data.num_eval_images = 8
  config.mask.kind = "free_form"
  config.mask.min_hole_ratio = 0.01
  config.mask.max_hole_ratio = 0.6
  config.model = defaults.pconv_model_config()
  config.model.update(num_levels=3, base_features=4)
  config.loss = defaults.pconv_loss_config()
  return config


def test_pconv_unet_trains_and_reports_hole_ratio_bins(tmp_path):
  result = train.train_and_evaluate(tiny_pconv_config(), str(tmp_path))
  losses = [m["train/loss"] for _, m in result["train"]]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  # The paper's terms are logged; VGG terms are off without a weights file.
  terms = result["train"][0][1]
  assert {"train/valid", "train/hole", "train/tv"} <= set(terms) and "train/style_out" not in terms
  with open(os.path.join(tmp_path, "eval", "latest.json")) as f:
    saved = json.load(f)
  bins = saved["hole_ratio_bins"]["composite"]
  assert list(bins)[:2] == ["(0.01, 0.1]", "(0.1, 0.2]"]
  assert sum(b["count"] for b in bins.values()) == saved["num_images"] == 8


def test_missing_vgg_file_is_a_clear_error(tmp_path):
  config = tiny_pconv_config()
  config.loss.vgg16_weights = str(tmp_path / "vgg16.npz")
  with pytest.raises(FileNotFoundError, match="vgg16.npz"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_pconv_configs_build_the_paper_network():
  from ml_collections import config_flags  # noqa: F401  (configs load like the driver loads them)
  import importlib.util
  for name, levels, size in (("pconv", 7, 256), ("pconv_celeba", 7, 256), ("pconv_512", 8, 512)):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    assert (config.model.num_levels, config.image_size) == (levels, size)
    task = reconstruction.build_task(config, lambda key, b: None, 3, {})
    assert isinstance(task.model, PConvUNet) and task.model.num_levels == levels
