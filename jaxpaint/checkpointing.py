"""orbax checkpoints of the train state together with the grain iterator state."""

import os
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """Asynchronous saves every N steps, keeps the last K, resumes the newest.

  Each checkpoint holds the train state (params, optimiser and BatchNorm state, step) and the
  data iterator's position. The step RNG is derived from (seed, step), so nothing else is
  needed to continue exactly where an uninterrupted run would be.
  """

  def __init__(self, directory: str, *, max_to_keep: int, save_interval_steps: int):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
            enable_async_checkpointing=True, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, state: Any, data_iterator: Any | None) -> tuple[Any, int]:
    """Restores the newest checkpoint into ``state``'s structure and shardings (in place for
    the iterator); returns (state, step), or (state, 0) when there is none."""
    step = self._manager.latest_step()
    if step is None:
      return state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    self._check_compatible(step, abstract)
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("Resumed from %s at step %d.", self.directory, step)
    return restored["state"], step

  def _check_compatible(self, step: int, abstract: Any) -> None:
    """Refuses, with a readable message, a checkpoint written by a different model/optimiser."""
    stored = {_path_name(path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_leaves_with_path(self._manager.item_metadata(step)["state"])}
    wanted = {_path_name(path): tuple(np.shape(leaf)) for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
    problems = [f"{name}: missing from the checkpoint" for name in sorted(wanted.keys() - stored.keys())]
    problems += [f"{name}: not in this model" for name in sorted(stored.keys() - wanted.keys())]
    problems += [f"{name}: checkpoint {stored[name]} vs model {wanted[name]}"
                 for name in sorted(wanted.keys() & stored.keys()) if stored[name] != wanted[name]]
    if problems:
      raise ValueError(
          f"The checkpoint at step {step} in {self.directory} was written by a different model or "
          f"optimiser than this config builds ({len(problems)} mismatches, e.g. {'; '.join(problems[:3])}). "
          "Use a new --workdir, or rerun with the config the workdir was trained with "
          "(its config.json).")

  def save(self, step: int, state: Any, data_iterator: Any | None, *, force: bool = False) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def restore_newest(task: Any, config: Any, channels: int, directory: str, mesh: Any) -> tuple[Any, int]:
  """``task``'s newest checkpoint in ``directory``, replicated on ``mesh``; (state, step).

  The state's structure comes from ``jax.eval_shape`` of ``task.init_state``: nothing is
  initialised only to be overwritten. Step 0 (and an abstract state) when there is none.
  """
  shape = (config.batch_size, config.image_size, config.image_size, channels)
  abstract = jax.eval_shape(task.init_state, jax.random.key(config.seed), jax.ShapeDtypeStruct(shape, jnp.float32))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
  ckpt = Checkpointer(directory, max_to_keep=config.keep_checkpoints,
                      save_interval_steps=config.checkpoint_every_steps)
  try:
    return ckpt.restore(state, None)
  finally:
    ckpt.close()


def _path_name(path) -> str:
  """'params/Conv_0/kernel' from a pytree path of dict, attribute and sequence keys."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return "/".join(parts)
