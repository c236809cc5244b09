"""Times a jaxpaint program (a Task's train step or inpaint) exactly as the driver runs it.

The step is built from a config file through :func:`jaxpaint.steps.build_task`, its state
comes from ``task.init_state`` (jitted with replicated out-shardings, as
:mod:`jaxpaint.train` does) and the step is jitted like the driver's: batch sharded over the
``data`` mesh axis, state and RNG replicated, state donated, uint8 images converted on
device. Batches are synthetic uint8 images put on device with
:func:`jaxpaint.parallel.global_batch`, as the driver puts real ones.

Per program: lowering and compilation are timed on their own
(``jit(...).lower(...).compile()``); then ``warmup`` steps, then ``repeats`` timings of
``steps`` steps each, every timing ending in ``jax.block_until_ready``. The compiled
program also gives FLOPs (``cost_analysis``) and memory sizes (``memory_analysis``).

This module imports neither the driver (its logging needs clu and TensorFlow) nor the data
pipeline, so it runs wherever jax, flax, optax and ml-collections are installed.
"""

import dataclasses
import datetime
import importlib.util
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxpaint import stages as jaxpaint_stages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 peak TFLOP/s per chip, matched in order against the lower-cased device kind.
# MFU is always quoted against this bf16 peak, also for float32 runs (the usual convention).
PEAK_BF16_TFLOPS = (
    ("h100 pcie", 756.0),
    ("h100", 989.0),
    ("h200", 989.0),
    ("gh200", 989.0),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("l40s", 362.0),
    ("l4", 121.0),
    ("a10", 125.0),
    ("v100", 125.0),  # fp16 tensor cores; V100 has no bf16
    ("tpu v6", 918.0),
    ("tpu v5 lite", 197.0),
    ("tpu v5e", 197.0),
    ("tpu v5p", 459.0),
    ("tpu v5", 459.0),
    ("tpu v4", 275.0),
)

# Keys in pixels, scaled with the image when --image_size changes it (0 = off/auto, kept).
SIZE_KEYS = ("mask.size", "mask.box_size", "mask.box_max_size", "eval_mask.size",
             "eval_mask.box_size", "eval_mask.box_max_size", "model.patch_size", "model.overlap",
             "jitter_size")

# config.model keys that set a network's depth: H and W must be divisible by 2**value.
DEPTH_KEYS = ("num_downs", "num_levels", "depth")


# ------------------------------------------------------------------------------ configs


def load_config(config_file: str) -> ml_collections.ConfigDict:
  """Runs ``get_config()`` of a config file (a path, or a name under ``configs/``)."""
  path = config_file if os.path.exists(config_file) else os.path.join(REPO, "configs", config_file)
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {config_file!r} not found (looked in {REPO}/configs).")
  spec = importlib.util.spec_from_file_location(f"_bench_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The driver's per-stage config (:func:`jaxpaint.stages.stage_config`), for a named stage."""
  stages = tuple(config.get("stages") or ())
  if stage not in stages:
    raise ValueError(f"stage {stage!r} is not in config.stages={stages}.")
  return jaxpaint_stages.stage_config(config, stage)


def num_channels(config: ml_collections.ConfigDict) -> int:
  """Image channels of the configured data (1 for mnist, else 3), as jaxpaint.data says."""
  return 1 if config.get("data", {}).get("name", "") == "mnist" else 3


def has_key(config: ml_collections.ConfigDict, dotted: str) -> bool:
  """Whether ``config`` has the dotted key, e.g. 'model.partial'."""
  return _get_path(config, dotted)[2]


def _get_path(config: ml_collections.ConfigDict, dotted: str) -> tuple[Any, str, bool]:
  *parents, leaf = dotted.split(".")
  node = config
  for part in parents:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      return None, leaf, False
    node = node[part]
  return node, leaf, leaf in node


@dataclasses.dataclass(frozen=True)
class Settings:
  """Command-line overrides applied to every benchmarked config.

  Attributes:
    batch_size: global batch size; None keeps the config's.
    image_size: square image side; None keeps the config's. Pixel sizes (``SIZE_KEYS``:
      mask boxes, Context Encoders' patch, pix2pix's jitter) scale with it, and depth keys
      (``DEPTH_KEYS``) are lowered when the new size is not divisible by ``2**depth``.
    compute_dtype: 'float32' or 'bfloat16' (float32 master weights either way).
    width_scale: multiplies every integer (or tuple of integers) ``config.model.*features*``
      key, rounding, at least 1.
    sets: dotted-key overrides, e.g. ``{'model.num_downs': 6}``, applied where the key exists.
  """
  batch_size: Optional[int] = None
  image_size: Optional[int] = None
  compute_dtype: str = "float32"
  width_scale: float = 1.0
  sets: tuple[tuple[str, Any], ...] = ()


def apply_settings(config: ml_collections.ConfigDict, settings: Settings) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A copy of ``config`` with ``settings`` applied; returns it and {key: new value} of changes."""
  config = ml_collections.ConfigDict(config.to_dict())
  changes: dict[str, Any] = {}

  def put(node, leaf, dotted, value):
    if node[leaf] != value:
      node[leaf] = value
      changes[dotted] = value

  if settings.batch_size is not None:
    put(config, "batch_size", "batch_size", int(settings.batch_size))
  if settings.image_size is not None and settings.image_size != config.image_size:
    factor = settings.image_size / config.image_size
    put(config, "image_size", "image_size", int(settings.image_size))
    for dotted in SIZE_KEYS:
      node, leaf, found = _get_path(config, dotted)
      if found and isinstance(node[leaf], int) and not isinstance(node[leaf], bool) and node[leaf] > 0:
        put(node, leaf, dotted, max(1, int(round(node[leaf] * factor))))
  put(config, "compute_dtype", "compute_dtype", settings.compute_dtype)
  if settings.width_scale != 1.0:
    scale = lambda v: max(1, int(round(v * settings.width_scale)))
    for key, value in config.model.items():
      if "features" not in key:
        continue
      if isinstance(value, int) and not isinstance(value, bool):
        put(config.model, key, f"model.{key}", scale(value))
      elif isinstance(value, (tuple, list)) and value and all(isinstance(v, int) for v in value):
        put(config.model, key, f"model.{key}", type(value)(scale(v) for v in value))
  for dotted, value in settings.sets:
    node, leaf, found = _get_path(config, dotted)
    if found:
      put(node, leaf, dotted, value)
  size = config.image_size
  for key in DEPTH_KEYS:
    value = config.model.get(key)
    if isinstance(value, int) and value > 0 and size % 2**value:
      fitted = value
      while fitted > 1 and size % 2**fitted:
        fitted -= 1
      put(config.model, key, f"model.{key}", fitted)
  return config, changes


def parse_sets(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
  """['model.num_downs=6', 'mask.kind=boxes'] -> (('model.num_downs', 6), ('mask.kind', 'boxes'))."""
  import ast  # noqa: PLC0415
  out = []
  for item in items:
    if "=" not in item:
      raise ValueError(f"--set entry {item!r} must look like key.path=value.")
    key, raw = item.split("=", 1)
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    out.append((key.strip(), value))
  return tuple(out)


# ------------------------------------------------------------------------------ device


def device_summary() -> dict[str, Any]:
  devices = jax.devices()
  return {"device_kind": devices[0].device_kind, "platform": devices[0].platform,
          "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
          "process_count": jax.process_count()}


def peak_tflops(device_kind: str, override: Optional[float] = None) -> Optional[float]:
  """Peak dense bf16 TFLOP/s of one device: ``override`` if given, else from the table, else None."""
  if override:
    return float(override)
  kind = device_kind.lower()
  for name, value in PEAK_BF16_TFLOPS:
    if name in kind:
      return value
  return None


def git_commit() -> str:
  """HEAD's hash, 'uncommitted' when the work tree differs from it, 'no commit' without one."""
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          timeout=20)
    if head.returncode:
      return "no commit"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, timeout=20).stdout.strip()
    return "uncommitted" if dirty else head.stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown (git not available)"


def environment(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """What a result file needs to be reproduced: device, versions, commit, command line."""
  import flax  # noqa: PLC0415
  try:  # the copy on a remote machine may have no .git, or no git
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          timeout=20).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    head = ""
  return {
      **device_summary(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "jax": jax.__version__, "jaxlib": _jaxlib_version(),
      "flax": flax.__version__, "python": platform.python_version(),
      "host": platform.node(), "cpu_count": os.cpu_count(),
      "git_commit": git_commit(), "git_head": head or None,
      "command": " ".join([sys.executable.split("/")[-1], "-m", _module_name(), *(argv or sys.argv)[1:]]),
  }


def _jaxlib_version() -> Optional[str]:
  try:
    import jaxlib  # noqa: PLC0415
    return jaxlib.__version__
  except ImportError:
    return None


def _module_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])


# ------------------------------------------------------------------------------ programs


@dataclasses.dataclass
class Program:
  """One jitted program and its arguments, ready to lower.

  ``carry``: the first output replaces the first argument on every call (a train step with
  its state donated); otherwise the same arguments are reused (inference).
  """
  fn: Callable[..., Any]  # a jax.jit-wrapped function
  args: tuple[Any, ...]
  keys: list[jax.Array]  # one RNG key per call; replaces the last argument
  carry: bool
  images_per_call: int
  num_params: int


def _count_params(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def synthetic_images(config: ml_collections.ConfigDict, seed: int = 0) -> np.ndarray:
  """This process's slice of a global uint8 batch [B / processes, S, S, C] of noise."""
  per_process = config.batch_size // jax.process_count()
  shape = (per_process, config.image_size, config.image_size, num_channels(config))
  return np.random.default_rng(seed + jax.process_index()).integers(0, 256, shape, dtype=np.uint8)


def init_state(task, config: ml_collections.ConfigDict, sharding) -> Any:
  """``task.init_state`` jitted to replicated outputs, with the driver's key and sample shape."""
  init_rng = jax.random.split(jax.random.key(config.seed), 3)[0]
  shape = (config.batch_size, config.image_size, config.image_size, num_channels(config))
  return jax.jit(task.init_state, out_shardings=sharding)(init_rng, jnp.zeros(shape, jnp.float32))


def build_task(config: ml_collections.ConfigDict, mesh,
               earlier_stages: Sequence[tuple[str, ml_collections.ConfigDict]] = ()):
  """The config's Task; earlier stages of a staged config are given freshly initialised states.

  Args:
    config: the (stage's) config.
    mesh: the mesh the earlier stages' states are replicated over.
    earlier_stages: (stage name, its config) of the stages before this one, in order, as
      the driver hands their final states to later stages (``previous``).
  """
  from jaxpaint import parallel, steps  # noqa: PLC0415
  previous = {}
  for name, stage_cfg in earlier_stages:
    stage_task = steps.build_task(stage_cfg, num_channels(stage_cfg), previous=dict(previous))
    previous[name] = init_state(stage_task, stage_cfg, parallel.replicated(mesh))
  return steps.build_task(config, num_channels(config), previous=previous)


def train_program(task, config: ml_collections.ConfigDict, mesh, num_keys: int) -> Program:
  """The driver's jitted train step on a synthetic batch."""
  from jaxpaint import images as image_lib  # noqa: PLC0415
  from jaxpaint import parallel  # noqa: PLC0415
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  state = init_state(task, config, repl)
  images = parallel.global_batch(synthetic_images(config), batch_sh)

  # As jaxpaint.train._train_stage's train_step: same shardings, same donation.
  def train_step(state, images_u8, rng):
    return task.train_step(state, image_lib.to_float(images_u8), rng)

  fn = jax.jit(train_step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl),
               donate_argnums=(0,))
  train_rng = jax.random.split(jax.random.key(config.seed), 3)[1]
  # Uncommitted keys, as the driver passes them: a key committed to the replicated sharding
  # gives every array drawn from it an explicit P() type that cannot meet the batch's P('data').
  keys = [jax.random.fold_in(train_rng, step) for step in range(1, num_keys + 1)]
  return Program(fn, (state, images, keys[0]), keys, carry=True, images_per_call=config.batch_size,
                 num_params=_count_params(task.parameters(state)))


def inpaint_program(task, config: ml_collections.ConfigDict, mesh, num_keys: int) -> Program:
  """``task.inpaint`` on a synthetic batch with masks drawn as the Evaluator draws them."""
  from jaxpaint import images as image_lib  # noqa: PLC0415
  from jaxpaint import masks as mask_lib  # noqa: PLC0415
  from jaxpaint import parallel  # noqa: PLC0415
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  state = init_state(task, config, repl)
  images = parallel.global_batch(synthetic_images(config), batch_sh)
  size = config.image_size
  mask_fn = mask_lib.make_mask_fn(config.get("eval_mask") or config.mask, size, size)

  def inpaint(state, images_u8, key):
    images = image_lib.to_float(images_u8)
    masks = mask_fn(key, images.shape[0])
    return task.inpaint(state, images, masks, jax.random.fold_in(key, 1))

  fn = jax.jit(inpaint, in_shardings=(repl, batch_sh, repl))
  eval_rng = jax.random.split(jax.random.key(config.seed), 3)[2]
  keys = [jax.random.fold_in(eval_rng, i) for i in range(num_keys)]  # uncommitted (see above)
  return Program(fn, (state, images, keys[0]), keys, carry=False, images_per_call=config.batch_size,
                 num_params=_count_params(task.parameters(state)))


# ------------------------------------------------------------------------------ measuring


def _cost(compiled) -> dict[str, float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 (some backends do not implement it)
    return {}
  if isinstance(cost, (list, tuple)):  # older jax: one dict per partition
    cost = cost[0] if cost else {}
  return dict(cost or {})


def memory_sizes(compiled) -> Optional[dict[str, int]]:
  """Sizes from ``compiled.memory_analysis()`` (per device): arguments, outputs, temporaries.

  ``total_bytes = argument + output + temp`` is what the program needs on one device with
  no buffer reuse between inputs and outputs; ``total_minus_alias_bytes`` subtracts the
  outputs that reuse donated inputs (the train state), the better estimate of the peak.
  """
  try:
    stats = compiled.memory_analysis()
  except Exception:  # noqa: BLE001
    return None
  if stats is None:
    return None
  sizes = {name: int(getattr(stats, f"{name}_size_in_bytes", 0) or 0)
           for name in ("argument", "output", "temp", "alias", "generated_code")}
  total = sizes["argument"] + sizes["output"] + sizes["temp"]
  return {**{f"{k}_bytes": v for k, v in sizes.items()}, "total_bytes": total,
          "total_minus_alias_bytes": total - sizes["alias"]}


def _hlo_computations(hlo: str) -> dict[str, str]:
  """HLO module text -> {computation name: its text} (computations start and end at column 0)."""
  comps, name, lines = {}, None, []
  for line in hlo.splitlines():
    if name is None:
      match = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
      if match:
        name, lines = match.group(1), []
    elif line.startswith("}"):
      comps[name], name = "\n".join(lines), None
    else:
      lines.append(line)
  return comps


def has_loops(compiled) -> bool:
  """Whether a while loop of the program runs a convolution or a matmul.

  XLA's cost analysis takes a while loop's body once, whatever its trip count (lax.scan,
  fori_loop: the latent search), so such a program's FLOPs are a lower bound. Loops without
  convolutions or dots (CPU's rolled threefry RNG, stroke-mask walks) change little.
  """
  try:
    comps = _hlo_computations(compiled.as_text() or "")
  except Exception:  # noqa: BLE001
    return False
  heavy = re.compile(r"\b(convolution|dot)\(")
  for text in comps.values():
    for body in re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", text):
      seen, todo = set(), [body]
      while todo:
        current = todo.pop()
        if current in seen or current not in comps:
          continue
        seen.add(current)
        if heavy.search(comps[current]):
          return True
        todo.extend(n for n in re.findall(r"%([\w.\-]+)", comps[current]) if n in comps)
  return False


def _device_peak_bytes() -> Optional[int]:
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _spread(values: Sequence[float]) -> dict[str, float]:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Runner:
  """A compiled program (compilation timed on construction) that times batches of calls."""

  def __init__(self, program: Program):
    self.program = program
    start = time.perf_counter()
    lowered = program.fn.lower(*program.args)
    lowered_at = time.perf_counter()
    self.compiled = lowered.compile()
    self.lower_s, self.compile_s = lowered_at - start, time.perf_counter() - lowered_at
    self.args, self.calls, self.out = list(program.args), 0, None
    self.warmup_s, self.warmup_calls = 0.0, 0

  def _call(self):
    self.args[-1] = self.program.keys[self.calls % len(self.program.keys)]
    self.calls += 1
    self.out = self.compiled(*self.args)
    if self.program.carry:
      self.args[0] = self.out[0]

  def warmup(self, calls: int) -> None:
    """At least one untimed call, so that the first timing is warm."""
    start = time.perf_counter()
    for _ in range(max(calls, 1)):
      self._call()
    jax.block_until_ready(self.out)
    self.warmup_s, self.warmup_calls = time.perf_counter() - start, max(calls, 1)

  def time(self, steps: int) -> float:
    """steps/s of ``steps`` calls, blocked on the last result."""
    start = time.perf_counter()
    for _ in range(steps):
      self._call()
    jax.block_until_ready(self.out)
    return steps / (time.perf_counter() - start)

  def result(self, rates: Sequence[float], steps: int, peak: Optional[float]) -> dict[str, Any]:
    """The record of :func:`measure` from timings ``rates`` (steps/s)."""
    cost = _cost(self.compiled)
    flops = float(cost["flops"]) if cost.get("flops", 0) > 0 else None
    steps_per_s = _spread(rates)
    per_call = self.program.images_per_call
    result = {
        "lower_s": self.lower_s, "compile_s": self.compile_s,
        "warmup_calls": self.warmup_calls, "warmup_s": self.warmup_s,
        "steps": steps, "repeats": len(rates), "steps_per_s": steps_per_s,
        "images_per_s": {k: v * per_call for k, v in steps_per_s.items()},
        "step_ms_median": 1000.0 / steps_per_s["median"],
        "images_per_call": per_call,
        "num_params": self.program.num_params,
        "flops_per_step": flops,
        "flops_lower_bound": has_loops(self.compiled),
        "bytes_accessed_per_step": float(cost["bytes accessed"]) if "bytes accessed" in cost else None,
        "achieved_tflops": flops * steps_per_s["median"] / 1e12 if flops else None,
        "memory": memory_sizes(self.compiled),
        "device_peak_bytes_in_use": _device_peak_bytes(),
        "peak_tflops": peak,
        "mfu": flops * steps_per_s["median"] / (peak * 1e12) if flops and peak else None,
    }
    if self.program.carry:
      metrics = jax.device_get(self.out[1])
      loss = metrics.get("loss") if isinstance(metrics, dict) else None
      result["final_loss_finite"] = None if loss is None else bool(np.all(np.isfinite(loss)))
    return result


def _check_counts(steps: int, repeats: int, warmup: int) -> None:
  if steps < 1 or repeats < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1, repeats >= 1, warmup >= 0; got {steps}, {repeats}, {warmup}.")


def measure(program: Program, *, steps: int, repeats: int, warmup: int,
            peak: Optional[float] = None) -> dict[str, Any]:
  """Compiles ``program`` (timed), runs warm-up calls, then ``repeats`` x ``steps`` timed calls.

  Returns compile/lower seconds, steps/s and images/s (median, min, max over repeats),
  FLOPs per call (per device, from XLA's cost analysis), memory sizes and, when ``peak``
  (TFLOP/s per device) is known, MFU = FLOPs * steps/s / peak.
  """
  _check_counts(steps, repeats, warmup)
  runner = Runner(program)
  runner.warmup(warmup)
  return runner.result([runner.time(steps) for _ in range(repeats)], steps, peak)


def time_interleaved(timers: dict[str, Callable[[int], float]], *, steps: int,
                     repeats: int) -> dict[str, list[float]]:
  """Round-robin timings (steps/s) of warm timers: repeat r times every timer once.

  On a shared machine whose load drifts, neighbours in time see the same load, so ratios
  of interleaved medians are far steadier than those of back-to-back runs.
  """
  rates: dict[str, list[float]] = {name: [] for name in timers}
  for _ in range(repeats):
    for name, timer in timers.items():
      rates[name].append(timer(steps))
  return rates


def measure_interleaved(programs: dict[str, Program], *, steps: int, repeats: int, warmup: int,
                        peak: Optional[float] = None) -> dict[str, dict[str, Any]]:
  """:func:`measure` for several programs, compiled and warmed first, then timed round-robin."""
  _check_counts(steps, repeats, warmup)
  runners = {name: Runner(program) for name, program in programs.items()}
  for runner in runners.values():
    runner.warmup(warmup)
  rates = time_interleaved({name: r.time for name, r in runners.items()}, steps=steps, repeats=repeats)
  return {name: {**r.result(rates[name], steps, peak), "interleaved_with": sorted(set(runners) - {name})}
          for name, r in runners.items()}


# ------------------------------------------------------------------------------ formatting


def human_bytes(value: Optional[float]) -> str:
  if value is None:
    return "-"
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(value) < 1024 or unit == "TiB":
      return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
    value /= 1024
  return "-"


def human_flops(value: Optional[float]) -> str:
  if not value:
    return "-"
  exponent = min(int(math.log10(value) // 3), 5)
  unit = ["", "K", "M", "G", "T", "P"][exponent]
  return f"{value / 10 ** (3 * exponent):.2f} {unit}FLOP"


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
  """A GitHub-markdown table (also readable on a terminal)."""
  cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
  line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
  return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                    *(line(r) for r in cells[1:])])
