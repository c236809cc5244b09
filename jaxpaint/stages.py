"""Staged configs (e.g. LSGAN: GAN, then refiner): the per-stage view of one config.

Kept apart from the driver so that steps and benchmarks can use it without importing clu,
TensorFlow or the driver's absl flags.
"""

import ml_collections


def stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """``config`` with ``config.stage_overrides[stage]`` applied (a flat or nested dict) and
  ``stage`` set; sub-dicts given in the overrides update, rather than replace, the base ones."""
  stage_cfg = ml_collections.ConfigDict(config.to_dict())
  overrides = config.get("stage_overrides", {}).get(stage, {})
  for key, value in ml_collections.ConfigDict(overrides).items():
    if isinstance(value, ml_collections.ConfigDict) and key in stage_cfg:
      stage_cfg[key].update(value.to_dict())
    else:
      stage_cfg[key] = value
  stage_cfg.stage = stage
  return stage_cfg
