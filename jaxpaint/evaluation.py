"""Evaluation on fixed test images and fixed masks: metrics, JSON, TensorBoard, image grids."""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxpaint import images as image_lib
from jaxpaint import masks as mask_lib
from jaxpaint import metrics as metric_lib
from jaxpaint import parallel, visualize
from jaxpaint.steps.base import Task

# Seed reports that printed (ssim + 1) / 2 as "SSIM"; we print it beside the real SSIM, labelled.
UNIT_SSIM_KEY = "ssim_as_(ssim+1)/2"


def _pad_batch(images: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
  """Pads a short last batch (repeating its last image) so every eval batch has one shape."""
  count = images.shape[0]
  if count == batch_size:
    return images, count
  pad = np.repeat(images[-1:], batch_size - count, axis=0)
  return np.concatenate([images, pad]), count


class Evaluator:
  """Scores ``task.inpaint`` on the same images and masks at every evaluation.

  Masks come from ``config.eval_mask`` (default: ``config.mask``) with a key fixed by the seed,
  so every eval, every resumed run and every model compared on the same config sees the same
  holes. The masked input itself (holes blanked) is scored too, as the baseline to beat.
  """

  def __init__(self, task: Task, config: ml_collections.ConfigDict, mesh: Mesh,
               eval_batches: list[dict[str, np.ndarray]], rng: jax.Array):
    self.task, self.config, self.eval_batches = task, config, eval_batches
    self.batch_sharding = parallel.batch_sharding(mesh)
    repl = parallel.replicated(mesh)
    size = config.image_size
    mask_config = config.get("eval_mask") or config.mask
    mask_fn = mask_lib.make_mask_fn(mask_config, size, size)
    self.hole_ratio_bins = bool(config.get("eval_hole_ratio_bins", False))
    self._rng = rng

    def eval_step(state, images_u8, batch_index):
      images = image_lib.to_float(images_u8)
      key = jax.random.fold_in(rng, batch_index)
      masks = mask_fn(key, images.shape[0])
      outputs = task.inpaint(state, images, masks, jax.random.fold_in(key, 1))
      outputs = {"masked_input": image_lib.apply_mask(images, masks), **outputs}
      scores = {name: metric_lib.compute_metrics(outputs[name], images, masks)
                for name in ("masked_input", *task.eval_outputs)}
      return scores, mask_lib.hole_ratio(masks), outputs, masks, images

    # Replicated outputs: every process can read the scores and the grid (on several hosts a
    # batch-sharded result would span devices this process cannot fetch).
    self._eval_step = jax.jit(eval_step, in_shardings=(repl, self.batch_sharding, None),
                              out_shardings=repl)

  def run(self, state: Any, step: int, writer=None, workdir: str | None = None) -> dict[str, Any]:
    """Evaluates all batches; writes scalars, ``eval/step_N.json`` and ``images/step_N.png``."""
    per_image: dict[str, dict[str, list[np.ndarray]]] = {}
    ratios, grid_columns = [], None
    for index, batch in enumerate(self.eval_batches):
      images, count = _pad_batch(batch["image"], self.config.batch_size)
      # Every process holds the whole eval batch; each device takes its own slice of it.
      images = jax.make_array_from_callback(images.shape, self.batch_sharding, lambda idx: images[idx])
      scores, hole_ratio, outputs, masks, targets = self._eval_step(state, images, index)
      scores, hole_ratio = jax.device_get((scores, hole_ratio))
      for name, values in scores.items():
        for metric, array in values.items():
          per_image.setdefault(name, {}).setdefault(metric, []).append(array[:count])
      ratios.append(hole_ratio[:count])
      if index == 0:
        grid_columns = self._grid_columns(*jax.device_get((outputs, masks, targets)))

    summary = {name: {metric: float(np.mean(np.concatenate(arrays)))
                      for metric, arrays in values.items()}
               for name, values in per_image.items()}
    for values in summary.values():
      values[UNIT_SSIM_KEY] = (values["ssim"] + 1.0) / 2.0
    result = {"step": step, "num_images": int(sum(len(r) for r in ratios)),
              "mean_hole_ratio": float(np.mean(np.concatenate(ratios))), "summary": summary}
    if self.hole_ratio_bins:
      for name in self.task.eval_outputs:
        flat = {m: np.concatenate(a) for m, a in per_image[name].items()}
        result.setdefault("hole_ratio_bins", {})[name] = metric_lib.bin_by_hole_ratio(flat, np.concatenate(ratios))
    if writer is not None:
      writer.write_scalars(step, {f"eval/{name}/{metric}": value for name, values in summary.items()
                                  for metric, value in values.items()})
      writer.write_images(step, {"eval/grid": visualize.make_grid(grid_columns)[None]})
    if workdir is not None:
      self._write_files(workdir, step, result, grid_columns)
    return result

  def _grid_columns(self, outputs, masks, targets) -> dict[str, np.ndarray]:
    columns = {"masked input": outputs.pop("masked_input"), "mask": visualize.mask_to_image(masks)}
    columns.update(outputs)
    columns["target"] = targets
    return columns

  @staticmethod
  def _write_files(workdir: str, step: int, result: dict[str, Any], grid_columns) -> None:
    for sub in ("eval", "images"):
      os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    for name in (f"step_{step:08d}.json", "latest.json"):
      with open(os.path.join(workdir, "eval", name), "w") as f:
        json.dump(result, f, indent=2, default=float)
    grid = visualize.make_grid(grid_columns)
    for name in (f"step_{step:08d}.png", "latest.png"):
      visualize.save_png(os.path.join(workdir, "images", name), grid)
