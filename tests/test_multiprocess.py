"""The driver as a two-process job (two "hosts" on this machine, one CPU device each).

The processes find each other as a SLURM launch announces them (jax.distributed's own SLURM
detection) in the first run, and through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID in the resumed one; they share one workdir, train on disjoint data shards,
evaluate, checkpoint, and resume together.
"""

import glob
import json
import os
import re
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SLURM_PORT_BASE = 65535 - 2**12 + 1  # jax derives the coordinator port from SLURM_JOB_ID


def _free_port() -> int:
  """A free port in SLURM's coordinator range (jax's rule: base + job id % 4096)."""
  for port in range(_SLURM_PORT_BASE + 1000, 65536):
    with socket.socket() as s:
      try:
        s.bind(("localhost", port))
      except OSError:
        continue
      return port
  raise RuntimeError("no free port for the coordinator")


def _cluster_env(index: int, launcher: str, port: int) -> dict[str, str]:
  """What a launcher tells process ``index`` of 2 about the job."""
  if launcher == "slurm":
    return dict(SLURM_JOB_ID=str(port - _SLURM_PORT_BASE), SLURM_STEP_NODELIST="localhost",
                SLURM_NTASKS="2", SLURM_PROCID=str(index), SLURM_LOCALID=str(index))
  return dict(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
              JAX_PROCESS_ID=str(index))


def _train_two_processes(workdir: str, num_train_steps: int, launcher: str) -> list[str]:
  """Runs `python -m jaxpaint.train` as processes 0 and 1 of one job; returns their logs."""
  args = [sys.executable, "-m", "jaxpaint.train", "--config=configs/quickstart.py",
          f"--workdir={workdir}", "--config.batch_size=4", "--config.image_size=16",
          f"--config.num_train_steps={num_train_steps}", "--config.log_every_steps=1",
          "--config.eval_every_steps=1000", "--config.checkpoint_every_steps=2",
          "--config.data.num_eval_images=6", "--config.mask.num_boxes=1",
          "--config.mask.box_size=6", "--config.mask.box_max_size=6", "--config.model.features=4",
          "--config.model.depth=2", "--config.optimizer.warmup_steps=0"]
  port, procs, logs = _free_port(), [], []
  inherited = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES",
                                    "JAX_PROCESS_ID", "XLA_FLAGS"))}
  for index in range(2):
    env = dict(inherited, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1",
               **_cluster_env(index, launcher, port))
    # Files, not pipes: a process blocked on a full pipe would stall its partner's collectives.
    logs.append(open(f"{workdir}.{launcher}.{index}.log", "w+"))
    procs.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
  try:
    for proc in procs:
      proc.wait(timeout=420)
  finally:
    for proc in procs:
      proc.kill()
  texts = []
  for index, (proc, log) in enumerate(zip(procs, logs)):
    log.seek(0)
    texts.append(log.read())
    log.close()
    assert proc.returncode == 0, f"process {index} failed:\n{texts[-1][-4000:]}"
  return texts


def _losses(log: str) -> dict[int, str]:
  return {int(step): loss for step, loss in re.findall(r"\[(\d+)\] .*train/loss=([-\d.e]+)", log)}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("multiprocess") / "run")
  first = _train_two_processes(workdir, num_train_steps=4, launcher="slurm")
  resumed = _train_two_processes(workdir, num_train_steps=6, launcher="env")
  return workdir, first, resumed


def test_two_processes_train_as_one_job(two_process_runs):
  workdir, first, _ = two_process_runs
  for log in first:
    assert "on 2 device(s)" in log  # one global mesh over both processes
  # The loss is a replicated global value: both processes report the same numbers.
  losses = [_losses(log) for log in first]
  assert sorted(losses[0]) == [1, 2, 3, 4] and losses[0] == losses[1]
  # Each process checkpoints its own data-iterator position beside the shared state.
  data_files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "checkpoints", "4", "data", "*")))
  assert any("process_0" in name for name in data_files) and any("process_1" in name for name in data_files), data_files


def test_two_processes_resume_together(two_process_runs):
  workdir, _, resumed = two_process_runs
  for log in resumed:
    assert re.search(r"Resumed from .* at step 4", log)
  losses = [_losses(log) for log in resumed]
  assert sorted(losses[0]) == [5, 6] and losses[0] == losses[1]
  # Evaluation ran at the end of each run, on all eval images (each process holds them all).
  for step in (4, 6):
    with open(os.path.join(workdir, "eval", f"step_{step:08d}.json")) as f:
      result = json.load(f)
    assert result["step"] == step and result["num_images"] == 6
  assert os.path.exists(os.path.join(workdir, "images", "latest.png"))


def test_incomplete_cluster_environment_is_a_clear_error():
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_NUM_PROC", "JAX_PROCESS"))}
  env.update(JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS="localhost:1")  # no process count or id
  proc = subprocess.run([sys.executable, "-c", "from jaxpaint import parallel; parallel.maybe_initialize_distributed()"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "JAX_NUM_PROCESSES and JAX_PROCESS_ID" in proc.stderr
