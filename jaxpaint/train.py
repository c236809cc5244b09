r"""The one training driver for every jaxpaint model.

  python -m jaxpaint.train --config=configs/quickstart.py --workdir=/tmp/jaxpaint
  python -m jaxpaint.train --config=configs/unet_cifar10.py --config.batch_size=128 --workdir=...

Data flows one way: config -> data -> jitted, sharded train step -> logs / eval / checkpoints.
Rerunning the same command resumes from the newest checkpoint in ``--workdir``.
"""

import functools
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from clu import metric_writers, parameter_overview, periodic_actions
from ml_collections import config_flags

from jaxpaint import checkpointing, data, evaluation, optim, parallel, steps
from jaxpaint.stages import stage_config
from jaxpaint import images as image_lib
from jaxpaint import masks as mask_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, eval JSON and image grids.")

REQUIRED_KEYS = ("seed", "batch_size", "image_size", "num_train_steps", "learning_rate",
                 "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                 "keep_checkpoints", "data", "mask", "model", "loss", "optimizer")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the run stops with the last good checkpoint kept."""


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a bad config before anything heavy runs, saying what to change."""
  missing = [key for key in REQUIRED_KEYS if key not in config]
  if missing:
    raise ValueError(f"config lacks {missing}; start from one of the files in configs/.")
  for key in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
              "keep_checkpoints", "image_size"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key}={config[key]!r} must be a positive integer.")
  parallel.validate_batch_size(config.batch_size)
  optim.validate_config(config)
  steps.compute_dtype(config)
  mask_lib.validate_config(config.mask, config.image_size, config.image_size)
  data.validate_config(config)


class _StopRequested:
  """Turns SIGTERM (preemption, `kill`) into a flag the loop checks between steps."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def __bool__(self) -> bool:
    return self._event.is_set()


def _check_finite(step: int, metrics: dict[str, Any], checkpoint_dir: str, last_good: int | None) -> None:
  loss = float(jax.device_get(metrics["loss"]))
  if not np.isfinite(loss):
    where = f"step {last_good} in {checkpoint_dir}" if last_good else "none (no checkpoint was written yet)"
    raise NonFiniteLossError(
        f"The training loss became {loss} at step {step}; stopping. Last good checkpoint: {where}. "
        "Lower config.learning_rate or set config.optimizer.grad_clip_norm, then rerun the same "
        "command to resume from that checkpoint.")


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  history = jax.device_get(history)
  return {f"train/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config`` in ``workdir``, resuming if it holds checkpoints.

  A config with ``stages`` (e.g. LSGAN: ``("gan", "refiner")``) trains them in order, each in
  ``workdir/<stage>`` with ``config.stage_overrides[stage]`` applied and the earlier stages'
  final states handed to the later ones. ``config.run_stages`` restricts which stages train;
  the others are only loaded from their finished checkpoints.

  Returns ``{"eval": last eval result, "train": [(step, mean train metrics), ...]}`` for the
  steps this call ran (for staged configs, plus ``"stages"``: that dict per stage run).
  """
  # SIGTERM is caught from the start: one during set-up stops the run at its first step.
  with _StopRequested() as stop_requested:
    return _train_stages(config, workdir, stop_requested)


def _train_stages(config: ml_collections.ConfigDict, workdir: str, stop_requested: "_StopRequested") -> dict[str, Any]:
  stages = tuple(config.get("stages") or ())
  if not stages:
    validate_config(config)
    return _train_stage(config, workdir, {}, stop_requested)[0]
  run = tuple(config.get("run_stages") or stages)
  if set(run) - set(stages):
    raise ValueError(f"config.run_stages={run} names stages not in config.stages={stages}.")
  configs = {stage: stage_config(config, stage) for stage in stages}
  for stage_cfg in configs.values():
    validate_config(stage_cfg)
  previous, results = {}, {}
  last = max(stages.index(stage) for stage in run)
  for stage in stages[:last + 1]:
    stage_dir = os.path.join(workdir, stage)
    if stop_requested:
      break
    if stage in run:
      logging.info("Stage %r.", stage)
      results[stage], previous[stage] = _train_stage(configs[stage], stage_dir, previous, stop_requested)
    else:
      previous[stage] = _load_finished_stage(configs[stage], stage_dir, previous)
  final = results[list(results)[-1]] if results else {"eval": {}, "train": []}
  return {"eval": final["eval"], "train": final["train"], "stages": results}


def _load_finished_stage(config: ml_collections.ConfigDict, workdir: str, previous: dict[str, Any]) -> Any:
  """The final state of an earlier stage that this run does not train."""
  channels = data.num_channels(config)
  task = steps.build_task(config, channels, previous=previous)
  state, step = checkpointing.restore_newest(task, config, channels, os.path.join(workdir, "checkpoints"),
                                             parallel.create_mesh())
  if step < config.num_train_steps:
    raise ValueError(f"stage {config.stage!r} is not finished ({step} of {config.num_train_steps} steps in "
                     f"{workdir}); run it first, e.g. --config.run_stages={config.stage}")
  return state


def _init_state(task: steps.Task, config: ml_collections.ConfigDict, sharding) -> Any:
  channels = data.num_channels(config)
  init_rng = jax.random.split(jax.random.key(config.seed), 3)[0]
  sample = jax.ShapeDtypeStruct((config.batch_size, config.image_size, config.image_size, channels), jnp.float32)
  jax.eval_shape(task.init_state, init_rng, sample)  # model-shape errors surface here, before data loads
  return jax.jit(task.init_state, out_shardings=sharding)(init_rng, jnp.zeros(sample.shape, sample.dtype))


def _train_stage(config: ml_collections.ConfigDict, workdir: str, previous: dict[str, Any],
                 stop_requested: "_StopRequested") -> tuple[dict[str, Any], Any]:
  """The training loop of one (stage of a) run; returns (results, final state)."""
  is_chief = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.create_mesh()
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  task = steps.build_task(config, data.num_channels(config), previous=previous)
  _, train_rng, eval_rng = jax.random.split(jax.random.key(config.seed), 3)
  state = _init_state(task, config, repl)

  train_iter = data.create_train_iterator(config, process_index=jax.process_index(),
                                          process_count=jax.process_count())
  eval_batches = data.create_eval_batches(config)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=config.keep_checkpoints,
                                    save_interval_steps=config.checkpoint_every_steps)
  state, start_step = ckpt.restore(state, train_iter)
  if is_chief:
    _save_config(config, workdir)  # after the restore: a refused rerun leaves the old one

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    parameter_overview.log_parameter_overview(task.parameters(state))
    writer.write_hparams({k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))})

  @functools.partial(jax.jit, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl),
                     donate_argnums=(0,))
  def train_step(state, images_u8, rng):
    return task.train_step(state, image_lib.to_float(images_u8), rng)

  evaluator = evaluation.Evaluator(task, config, mesh, eval_batches, eval_rng)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=config.num_train_steps, writer=writer, every_steps=config.log_every_steps)
  history, pending, last_good, eval_result, logged = [], None, start_step or None, {}, []
  logging.info("Training %s from step %d to %d on %d device(s) (%s).", config.model.name, start_step,
               config.num_train_steps, jax.device_count(), jax.devices()[0].platform)
  try:
    for step in range(start_step + 1, config.num_train_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        images = parallel.global_batch(next(train_iter)["image"], batch_sh)
        state, metrics = train_step(state, images, jax.random.fold_in(train_rng, step))
      # Check the previous step's loss while this one runs: NaN detection without a pipeline stall.
      if pending is not None:
        _check_finite(*pending, ckpt.directory, last_good)
      pending = (step, metrics)
      history.append(metrics)
      report_progress(step)

      is_last = step == config.num_train_steps
      if step % config.log_every_steps == 0 or is_last:
        logged.append((step, _mean_metrics(history)))
        writer.write_scalars(step, logged[-1][1])
        history = []
      if step % config.eval_every_steps == 0 or is_last:
        with report_progress.timed("eval"):
          eval_result = evaluator.run(state, step, writer, workdir if is_chief else None)
      if step % config.checkpoint_every_steps == 0 or is_last or stop_requested:
        _check_finite(step, metrics, ckpt.directory, last_good)
        if ckpt.save(step, state, train_iter, force=bool(is_last or stop_requested)):
          last_good = step
      if stop_requested:
        logging.warning("SIGTERM received: saved the checkpoint at step %d; exiting.", step)
        break
  finally:
    # Also on errors (NaN, interrupts): commit the saves in flight, the last good one included.
    ckpt.wait()
    ckpt.close()
    if hasattr(train_iter, "close"):
      train_iter.close()  # stops grain's worker processes and prefetch threads
  writer.flush()
  return {"eval": eval_result, "train": logged}, state


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("Both --config=configs/<name>.py and --workdir=DIR are required.")
  parallel.maybe_initialize_distributed()
  start = time.time()
  result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("Done in %.0f s. Final eval: %s", time.time() - start, json.dumps(result["eval"].get("summary", {})))


if __name__ == "__main__":
  app.run(main)
