"""Pix2Pix through the one driver: batch 1, GAN metrics, resume, and 1 vs 4 devices."""

import json
import os

import numpy as np
import pytest

from jaxpaint import defaults, train
from jaxpaint.steps import pix2pix
from test_train import run_on_devices


def tiny_pix2pix_config(num_train_steps=4, batch_size=1):
  config = defaults.base_config()
  config.update(pix2pix.default_config())
  config.batch_size = batch_size
  config.image_size = 32
  config.num_train_steps = num_train_steps
  # A schedule that does not depend on num_train_steps, so a run split in two (the resume
  # test) follows the same learning rates as one run.
  config.optimizer.schedule = "constant"
  config.log_every_steps = 1
  config.eval_every_steps = num_train_steps
  config.checkpoint_every_steps = 2
  config.jitter_size = 36
  config.model.update(num_downs=5, base_features=4, d_base_features=4)
  config.data.name = "samples"
  config.data.num_eval_images = 4
  config.mask.kind = "boxes"
  config.mask.num_boxes = 2
  config.mask.box_size = 9
  return config


def tiny_pix2pix_batch4():
  return tiny_pix2pix_config(num_train_steps=3, batch_size=4)


def _losses(result, key="train/loss"):
  return np.array([m[key] for _, m in result["train"]])


def test_pix2pix_batch_one_logs_both_nets_and_resumes(tmp_path):
  full = train.train_and_evaluate(tiny_pix2pix_config(), str(tmp_path / "full"))
  metrics = full["train"][-1][1]
  for key in ("d_loss", "g_loss", "g_adv", "l1", "d_acc_real", "d_acc_fake", "g_grad_norm", "d_grad_norm"):
    assert np.isfinite(metrics[f"train/{key}"]), key
  with open(tmp_path / "full" / "eval" / "latest.json") as f:
    summary = json.load(f)["summary"]
  assert {"composite", "raw", "masked_input"} <= set(summary)
  # Box-pixel MSE (the seed's metric) is reported for the composite.
  assert np.isfinite(summary["composite"]["hole_mse"])

  first = train.train_and_evaluate(tiny_pix2pix_config(num_train_steps=2), str(tmp_path / "split"))
  second = train.train_and_evaluate(tiny_pix2pix_config(), str(tmp_path / "split"))
  for key in ("train/loss", "train/d_loss"):
    resumed = np.concatenate([_losses(first, key), _losses(second, key)])
    np.testing.assert_allclose(resumed, _losses(full, key), rtol=1e-5, atol=1e-6)


def test_batch_one_on_several_devices_is_refused(monkeypatch):
  import jax
  from jaxpaint import parallel
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  with pytest.raises(ValueError, match="batch size 1, pix2pix's setting, needs a single device"):
    parallel.validate_batch_size(1)


@pytest.mark.slow
def test_one_and_four_devices_train_alike(tmp_path):
  one = run_on_devices(1, str(tmp_path / "one"), "test_pix2pix_train", "tiny_pix2pix_batch4")
  four = run_on_devices(4, str(tmp_path / "four"), "test_pix2pix_train", "tiny_pix2pix_batch4")
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-4)
  assert four["errors"] and "not divisible by the 4 devices" in four["errors"][0]
