r"""Compares trained models on the same test images and the same masks.

  python -m jaxpaint.evaluate --workdirs=/tmp/unet,/tmp/ce --names=unet,ce \
      --config=configs/context_encoder_celeba64.py --output=/tmp/compare

Each workdir is rebuilt from the ``config.json`` the driver wrote there and restored from its
newest checkpoint; a staged workdir (e.g. LSGAN: ``gan/`` then ``refiner/``) is evaluated at
its final stage, built on its earlier stages' finished checkpoints. ``--config`` says what
to evaluate on: data, image size, mask (``eval_mask`` or ``mask``), number of eval images and
the seed that fixes the masks; every model sees exactly those images and masks (the
models' own seeds and masks play no part). Written to ``--output``:

* ``comparison.md`` / ``comparison.json``: MSE, PSNR, SSIM on the whole image and on the hole
  only, after the masked-input baseline one row per model and scored output
  (``task.eval_outputs``; a model with several, e.g. LSGAN's refiner stage with ``lsgan``
  and ``refined``, gets rows ``name:output``);
* ``comparison.png``: input | mask | one column per row | target;
* ``<name>/eval/latest.json`` and ``<name>/images/latest.png``: each model's full evaluation.
"""

import dataclasses
import json
import os
import re
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxpaint import checkpointing, data, evaluation, parallel, steps, visualize
from jaxpaint import masks as mask_lib

FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Only when run as a program: jaxpaint.train defines its own --config at import time, and
  # a process that imports both modules (the test suite) must not define it twice.
  config_flags.DEFINE_config_file(
      "config", None, "Evaluation config (data, image size, mask, number of eval images, seed).",
      lock_config=True)
  flags.DEFINE_list("workdirs", None, "Comma-separated workdirs of trained models.")
  flags.DEFINE_list("names", None, "Comma-separated model names (default: the workdirs' basenames).")
  flags.DEFINE_string("output", None, "Directory for comparison.md/.json/.png.")

METRICS = ("mse", "psnr", "ssim", "hole_mse", "hole_psnr", "hole_ssim")
_HEADERS = ("MSE", "PSNR (dB)", "SSIM", "hole MSE", "hole PSNR (dB)", "hole SSIM")
BASELINE = "masked input"
# The config.mask keys worth printing per kind.
_MASK_KEYS = {"centre": ("size",), "boxes": ("num_boxes", "box_size", "box_max_size"),
              "file": ("path",)}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclasses.dataclass
class Stage:
  """One trained (stage of a) run: its config and directory."""
  config: ml_collections.ConfigDict
  directory: str


def load_config(path: str) -> ml_collections.ConfigDict:
  """A config written by the driver (``config.json``) as a ConfigDict."""
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def resolve_stages(workdir: str) -> list[Stage]:
  """The stages to load, in training order; the last one is the model to evaluate.

  A plain workdir is one stage. A staged run's top workdir (no ``config.json`` of its own,
  one sub-directory per stage) gives all of ``config.stages``; a stage's own directory
  gives the stages up to it.
  """
  if not os.path.isdir(workdir):
    raise ValueError(f"Workdir {workdir!r} does not exist.")
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    config = load_config(path)
    stages = tuple(config.get("stages") or ())
    if not stages:
      return [Stage(config, workdir)]
    top, last = os.path.dirname(os.path.abspath(workdir)), config.get("stage")
    if last not in stages:
      raise ValueError(f"{path} is a staged config without a valid 'stage' ({last!r}).")
  else:
    found = sorted(d for d in os.listdir(workdir)
                   if os.path.exists(os.path.join(workdir, d, "config.json")))
    if not found:
      raise ValueError(f"{workdir!r} holds no config.json (nor a stage directory with one); "
                       "pass the --workdir of a `python -m jaxpaint.train` run.")
    stages = tuple(load_config(os.path.join(workdir, found[0], "config.json")).get("stages") or ())
    if not stages:
      raise ValueError(f"{workdir!r} has no config.json; its sub-directory {found[0]!r} has "
                       "one: pass that directory instead.")
    top, last = workdir, stages[-1]
  result = []
  for stage in stages[:stages.index(last) + 1]:
    path = os.path.join(top, stage, "config.json")
    if not os.path.exists(path):
      raise ValueError(f"Stage {stage!r} of {top!r} was never trained ({path} is missing); "
                       f"train it first (--config.run_stages={stage}).")
    result.append(Stage(load_config(path), os.path.join(top, stage)))
  return result


def _checkpoint_dir(stage: Stage) -> str:
  """The stage's checkpoint directory; ValueError if it holds no checkpoint."""
  directory = os.path.join(stage.directory, "checkpoints")
  if not os.path.isdir(directory) or not any(d.isdigit() for d in os.listdir(directory)):
    raise ValueError(f"{stage.directory!r} has no checkpoints; train it first "
                     f"(python -m jaxpaint.train --workdir={stage.directory} ...).")
  return directory


def restore(stage: Stage, previous: dict[str, Any], mesh, require_finished: bool = False
            ) -> tuple[steps.Task, Any, int]:
  """(task, state, step) of a stage's newest checkpoint, the state replicated on ``mesh``."""
  config = stage.config
  directory = _checkpoint_dir(stage)
  channels = data.num_channels(config)
  task = steps.build_task(config, channels, previous=previous)
  state, step = checkpointing.restore_newest(task, config, channels, directory, mesh)
  if require_finished and step < config.num_train_steps:
    raise ValueError(f"Stage {config.get('stage')!r} in {stage.directory!r} is not finished "
                     f"({step} of {config.num_train_steps} steps); finish it first.")
  return task, state, step


def check_compatible(name: str, model_config: ml_collections.ConfigDict,
                     eval_config: ml_collections.ConfigDict) -> None:
  """Refuses a model whose images differ in size or channels from the evaluation's."""
  size, want = model_config.image_size, eval_config.image_size
  if size != want:
    raise ValueError(f"Model {name!r} was trained on {size}x{size} images but the evaluation "
                     f"config uses {want}x{want}; evaluate it with --config.image_size={size} "
                     "(or a config of that size).")
  channels, want = data.num_channels(model_config), data.num_channels(eval_config)
  if channels != want:
    raise ValueError(f"Model {name!r} makes {channels}-channel images but the evaluation data "
                     f"({eval_config.data.name!r}) has {want}; evaluate it on data with "
                     f"{channels} channel(s).")


def validate_eval_config(config: ml_collections.ConfigDict) -> None:
  """The evaluation config's data, size, batch and mask settings, checked up front."""
  missing = [k for k in ("seed", "batch_size", "image_size", "data", "mask") if k not in config]
  if missing:
    raise ValueError(f"The evaluation config lacks {missing}; start from one of the files in "
                     "configs/.")
  parallel.validate_batch_size(config.batch_size)
  size = config.image_size
  mask_lib.validate_config(config.get("eval_mask") or config.mask, size, size)
  data.validate_config(config)


def _model_names(workdirs: Sequence[str], names: Sequence[str] | None) -> list[str]:
  if names:
    if len(names) != len(workdirs):
      raise ValueError(f"--names has {len(names)} entries for {len(workdirs)} workdirs; give "
                       "one name per workdir.")
    names = list(names)
  else:
    names = [os.path.basename(os.path.normpath(w)) or "model" for w in workdirs]
    counts = {n: names.count(n) for n in names}
    names = [f"{n}_{i}" if counts[n] > 1 else n for i, n in enumerate(names)]
  for name in names:
    if not _NAME_RE.match(name) or name == BASELINE:
      raise ValueError(f"Model name {name!r} must be letters, digits, '_', '.', '+' or '-'; "
                       "set --names.")
  if len(set(names)) != len(names):
    raise ValueError(f"Model names {names} repeat; give distinct --names.")
  return names


class _CapturingEvaluator(evaluation.Evaluator):
  """An Evaluator that also keeps the first batch's images for the side-by-side grid."""

  first_batch: dict[str, np.ndarray] | None = None

  def _grid_columns(self, outputs, masks, targets):
    self.first_batch = {"masked_input": np.asarray(outputs["masked_input"]),
                        "masks": np.asarray(masks), "targets": np.asarray(targets),
                        "outputs": {k: np.asarray(outputs[k]) for k in self.task.eval_outputs}}
    return super()._grid_columns(outputs, masks, targets)


def compare(workdirs: Sequence[str], eval_config: ml_collections.ConfigDict, output: str,
            names: Sequence[str] | None = None) -> dict[str, Any]:
  """Evaluates every workdir on ``eval_config``'s images and masks; writes the comparison.

  Returns:
    The content of ``comparison.json``: ``eval`` (the evaluation setting), ``rows`` (the
    masked-input baseline, then one per model and scored output, each with METRICS) and
    ``masked_input_per_model`` (the baseline as each model's evaluation computed it).
  """
  if not workdirs:
    raise ValueError("No workdirs given; pass --workdirs=DIR1,DIR2.")
  names = _model_names(workdirs, names)
  validate_eval_config(eval_config)
  # Everything cheap is checked before anything is restored.
  resolved = []
  for name, workdir in zip(names, workdirs):
    stages = resolve_stages(workdir)
    check_compatible(name, stages[-1].config, eval_config)
    _checkpoint_dir(stages[-1])
    resolved.append(stages)

  is_chief = jax.process_index() == 0
  mesh = parallel.create_mesh()
  eval_batches = data.create_eval_batches(eval_config)
  # As the driver derives it, but from the evaluation config's seed: same masks for all.
  _, _, eval_rng = jax.random.split(jax.random.key(eval_config.seed), 3)
  rows, columns, results, reference = [], {}, {}, None
  for name, workdir, stages in zip(names, workdirs, resolved):
    previous = {}
    for stage in stages[:-1]:
      previous[stage.config.stage] = restore(stage, previous, mesh, require_finished=True)[1]
    task, state, step = restore(stages[-1], previous, mesh)
    logging.info("Evaluating %s (%s, step %d).", name, stages[-1].directory, step)
    evaluator = _CapturingEvaluator(task, eval_config, mesh, eval_batches, eval_rng)
    result = evaluator.run(state, step, writer=None,
                           workdir=os.path.join(output, name) if is_chief else None)
    results[name] = result
    batch = evaluator.first_batch
    if reference is None:
      reference = batch
      columns = {"input": batch["masked_input"], "mask": visualize.mask_to_image(batch["masks"])}
    elif not (np.array_equal(batch["masks"], reference["masks"])
              and np.array_equal(batch["targets"], reference["targets"])):
      raise RuntimeError(f"{name} was evaluated on other images or masks than {names[0]}.")
    for out in task.eval_outputs:
      label = name if len(task.eval_outputs) == 1 else f"{name}:{out}"
      columns[label] = batch["outputs"][out]
      rows.append({"name": label, "workdir": os.path.abspath(workdir),
                   "model": stages[-1].config.model.name, "stage": stages[-1].config.get("stage"),
                   "step": int(step), "output": out,
                   **{m: result["summary"][out][m] for m in METRICS}})
  columns["target"] = reference["targets"]
  first = results[names[0]]
  baseline = {"name": BASELINE, "workdir": None, "model": None, "stage": None, "step": None,
              "output": "masked_input",
              **{m: first["summary"]["masked_input"][m] for m in METRICS}}
  comparison = {
      "eval": {"data": eval_config.data.name, "image_size": eval_config.image_size,
               "mask": dict((eval_config.get("eval_mask") or eval_config.mask).items()),
               "seed": eval_config.seed, "num_images": first["num_images"],
               "mean_hole_ratio": first["mean_hole_ratio"]},
      "rows": [baseline, *rows],
      # Computed per model; equal up to float rounding (same images and masks).
      "masked_input_per_model": {n: r["summary"]["masked_input"] for n, r in results.items()},
  }
  if is_chief:
    _write(output, comparison, visualize.make_grid(columns))
  return comparison


def markdown_table(comparison: dict[str, Any]) -> str:
  """The comparison as a Markdown table with a one-line description of the setting."""
  e = comparison["eval"]
  keys = _MASK_KEYS.get(e["mask"].get("kind"), ("min_hole_ratio", "max_hole_ratio"))
  mask = ", ".join(f"{k}={e['mask'][k]!r}" for k in ("kind", *keys) if k in e["mask"])
  lines = [f"Evaluated on {e['num_images']} `{e['data']}` images at {e['image_size']}x"
           f"{e['image_size']}, mask ({mask}), mean hole ratio {e['mean_hole_ratio']:.3f}, seed "
           f"{e['seed']}. Images in [-1, 1]: MSE on that scale (x0.25 for [0, 1]).", "",
           "| model | step | " + " | ".join(_HEADERS) + " |",
           "|---|---:|" + "---:|" * len(_HEADERS)]
  for row in comparison["rows"]:
    cells = [f"{row['mse']:.5f}", f"{row['psnr']:.2f}", f"{row['ssim']:.4f}",
             f"{row['hole_mse']:.5f}", f"{row['hole_psnr']:.2f}", f"{row['hole_ssim']:.4f}"]
    label = row["name"] if row["model"] is None else f"{row['name']} ({row['model']})"
    step = "" if row["step"] is None else str(row["step"])
    lines.append(f"| {label} | {step} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _write(output: str, comparison: dict[str, Any], grid: np.ndarray) -> None:
  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "comparison.json"), "w") as f:
    json.dump(comparison, f, indent=2, default=float)
  with open(os.path.join(output, "comparison.md"), "w") as f:
    f.write(markdown_table(comparison))
  visualize.save_png(os.path.join(output, "comparison.png"), grid)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or not FLAGS.workdirs or FLAGS.output is None:
    raise app.UsageError("--workdirs=DIR1,DIR2, --config=configs/<name>.py and --output=DIR "
                         "are required.")
  parallel.maybe_initialize_distributed()
  comparison = compare(FLAGS.workdirs, FLAGS.config, FLAGS.output, FLAGS.names)
  print(markdown_table(comparison))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
