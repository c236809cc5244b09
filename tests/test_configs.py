"""Every file in configs/ loads, and validates (each stage of staged configs) before any data is read."""

import glob
import importlib.util
import os

import pytest

from jaxpaint import data, train

CONFIG_FILES = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                             "configs", "*.py")))


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def stage_configs(config):
  stages = tuple(config.get("stages") or ())
  return [train.stage_config(config, s) for s in stages] if stages else [config]


def test_the_documented_configs_exist():
  names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
  assert {"quickstart", "unet_mnist", "unet_cifar10", "unet_celeba", "pconv", "pconv_celeba", "pconv_512",
          "pix2pix"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.basename(p))
def test_config_validates_on_the_builtin_samples(path, tmp_path):
  for config in stage_configs(load(path)):
    config.data.name = "samples"
    train.validate_config(config)


TFDS_CONFIG_FILES = [p for p in CONFIG_FILES if load(p).data.name in ("mnist", "cifar10", "celeb_a")]


def test_tfds_configs_are_found():
  assert len(TFDS_CONFIG_FILES) >= 4  # unet_mnist, unet_cifar10, unet_celeba, pconv_celeba, ...


@pytest.mark.parametrize("path", TFDS_CONFIG_FILES, ids=lambda p: os.path.basename(p))
def test_unprepared_tfds_dataset_fails_fast_with_instructions(path, tmp_path):
  config = load(path)
  config.data.data_dir = str(tmp_path)
  with pytest.raises(data.DatasetNotPreparedError, match=config.data.name):
    train.validate_config(stage_configs(config)[0])
