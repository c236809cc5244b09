"""Data parallelism with jit + NamedSharding over one ``data`` mesh axis (no pmap).

The train state is replicated; the batch is split along its first axis over every device of
every host. jit then inserts the gradient all-reduce, and BatchNorm statistics are taken over
the global batch, as on one device.
"""

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables by which common launchers announce a multi-process job.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _launched_as_cluster() -> bool:
  if any(os.environ.get(name) for name in _CLUSTER_ENV):
    return True
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(name, "1") or 1) > 1:
      return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def maybe_initialize_distributed() -> None:
  """Joins the multi-host job when a launcher (SLURM, MPI, TPU pod) set one up, or when the
  environment names it: ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0) together with
  ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``."""
  if not _launched_as_cluster() or jax.distributed.is_initialized():
    return
  explicit = {arg: int(os.environ[name]) for name, arg in
              (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id"))
              if os.environ.get(name)}
  try:
    jax.distributed.initialize(**explicit)
  except ValueError as e:
    raise ValueError(f"Cannot join the multi-host job ({e}). Outside SLURM, MPI and TPU pods, set "
                     "JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID in "
                     "every process.") from e
  logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def create_mesh() -> Mesh:
  """A 1-D mesh of all devices of all processes.

  Auto axes: shardings of intermediates are left to the compiler (plain data parallelism),
  rather than tracked in types, which would reject e.g. per-example crops mixing a sharded
  batch with unsharded offsets.
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(host_batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """This process's slice [B / processes, ...] -> the global array [B, ...] sharded over ``data``."""
  return jax.make_array_from_process_local_data(sharding, host_batch)


def validate_batch_size(batch_size: int) -> None:
  """The global batch must split evenly over processes and devices."""
  devices, processes = jax.device_count(), jax.process_count()
  if batch_size < 1 or batch_size % devices:
    hint = " (batch size 1, pix2pix's setting, needs a single device: set CUDA_VISIBLE_DEVICES)" \
        if batch_size == 1 else ""
    raise ValueError(f"config.batch_size={batch_size} is not divisible by the {devices} devices; "
                     f"use a multiple of {devices}{hint}.")
  if batch_size % processes:
    raise ValueError(f"config.batch_size={batch_size} is not divisible by the {processes} processes.")
