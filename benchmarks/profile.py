r"""Where a train step spends its time: a jax.profiler trace of a benchmarked step, summarised.

  python -m benchmarks.profile --model=pix2pix --batch_size=1 --image_size=64 --steps=5 \
      --logdir=/tmp/prof
  python -m benchmarks.profile --model=pconv --image_size=128 --batch_size=2 --torch_peer

The program is built by :func:`benchmarks.run.prepare` (the driver's Task, state, shardings
and donation, as ``benchmarks.run`` times it), compiled and warmed up outside the trace,
timed untraced for ``--steps`` steps (to show the tracing overhead), then ``--steps`` steps,
each blocked, are recorded with ``jax.profiler.trace(logdir, create_perfetto_trace=True)``.
The ``perfetto_trace.json.gz`` that jax writes is parsed and summarised: the top ops by
time, with count per step, % of the traced step wall time, the HLO kind of each op
(``compiled.as_text()``), the user source line it comes from, and, for convolutions, their
FLOPs and achieved GFLOP/s; then a rollup by category (:data:`CATEGORIES`). The summary is
also written as ``profile_summary.json``, with the HLO text as ``program.hlo.txt``, next to
the trace; ``--summarize=RUN_DIR`` re-summarises such a folder.

Which trace events are ops (:func:`op_events`): complete events (``ph`` 'X', with ``dur``)
whose ``args`` carry ``hlo_op``. On CPU (jax 0.10) these are the thunk executor's events,
one per executed thunk, named after the HLO instruction, on the ``tf_XLAEigen`` worker
threads (and sometimes a ``tf_XLAPjRtCpuClient`` thread), with ``hlo_module`` and a
per-execution ``run_id``. On accelerators the op events are on ``/device:...`` processes;
when any exist only those are used, and if such a process has an ``XLA Ops`` thread only
that line is used (its stream threads repeat the same work kernel by kernel). Events of
other HLO modules than the profiled program are dropped. The accelerator rules are written
from the trace format, not checked on a GPU here.

XLA:CPU runs some thunks asynchronously: an Eigen convolution's event covers only its
launch (its work runs as thread-pool tasks afterwards), and a parallel loop's other
partitions may run later on another thread. The executor marks each op's completion with an
``end: <op>`` event, and tsl's ThreadpoolListener marks pool tasks (StartRegion ...
StopRegion) without naming their op. So a pool task that runs outside any op event, on a
``*XLAEigen*`` thread (the compute pool; XLA:CPU's client threads run a few thunks but
their pool tasks are mostly waits), is charged to the ops open then (started, completion not yet marked), in equal
parts (:func:`attribute`). Without this, a 1.4 GFLOP convolution showed as 0.3 ms (4.9
TFLOP/s on 2 cores) and the time it really took as idle.

Two times per op: ``self`` is the thread time it got (its own event, minus ops nested in
it on the same thread such as a while loop's body, plus its share of pool tasks); XLA:CPU
runs independent thunks concurrently on its worker threads, so self times can add up to
more than the wall time. ``attributed`` splits every instant of wall time equally between
the threads working then, each for its op, so attributed times add up to at most the wall
time of the traced steps; shares of the step are attributed time / wall time.

``--torch_peer`` profiles the model's PyTorch peer (:mod:`benchmarks.torch_peers`, eager)
for the same number of steps under ``torch.profiler`` and prints its top ops (key_averages)
and the same category rollup (self times; everything under ``Optimizer.step`` is the
optimizer, a convolution's internal copies are the convolution's), side by side with
jaxpaint's. jaxpaint's side then runs the peer's settings (masks, loss;
:func:`benchmarks.torch_peers.jaxpaint_sets`), as the timed comparison in
``benchmarks.torch_peers`` does. The peer runs after jaxpaint's trace is closed;
``--interleave`` alternates its steps with jaxpaint's instead, so that both see the same
load (both profilers are then on for all steps, and jax's Python tracer is off). On the
shared 2-core CPU here, run-to-run noise was larger than any difference between the two.

Flags are parsed with argparse, not absl: ``benchmarks.run`` defines absl flags with the
same names (``--image_size``, ``--steps``) in the same process.
"""

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import linecache
import math
import os
import re
import time
from typing import Any, Iterable, Optional, Sequence

from benchmarks import harness, registry

CONV_FWD = "conv fwd"
CONV_BWD_INPUT = "conv bwd-input"
CONV_BWD_FILTER = "conv bwd-filter"
CONV_OTHER = "conv (direction unknown)"
DOT = "dot/matmul"
RNG = "RNG/masks"
OPTIMIZER = "optimizer update"
REDUCE = "reduce/BatchNorm"
COPY_CONV = "copy/transpose for convs"
COPY_STATE = "copy of train state"
COPY = "copy/transpose"
ELEMENTWISE = "fusion/elementwise"
OTHER = "other"
CATEGORIES = (CONV_FWD, CONV_BWD_INPUT, CONV_BWD_FILTER, CONV_OTHER, DOT, RNG, OPTIMIZER, REDUCE,
              COPY_CONV, COPY_STATE, COPY, ELEMENTWISE, OTHER)
"""Categories, in the order they are tried (first match wins):

* conv fwd / bwd-input / bwd-filter: a convolution, a fusion containing one, or a cuDNN
  conv custom call. Direction: the custom call's target on GPU; else jax's op_name metadata
  (``transpose(jvp(...))`` = backward, otherwise forward); a backward or unlabelled one
  whose result reaches an optimizer update (past pure data movement) is a parameter
  gradient, bwd-filter; other backward ones are bwd-input; an unlabelled one that does not
  reach the optimizer is bwd-filter if shaped like a 4-D+ entry parameter (a kernel), else
  "direction unknown".
* dot/matmul: a dot or a fusion with one, a GEMM custom call.
* RNG/masks: RNG ops (rng*, threefry/random/randint/uniform/bernoulli in op_name) or ops
  whose innermost user source frame is in a ``masks.py``.
* optimizer update: elementwise work that reads an ``opt_state`` entry parameter (directly
  or through a copy) or comes from a source line calling apply_gradients / apply_updates /
  tx.update.
* reduce/BatchNorm: reduce, reduce-window, or ops of a BatchNorm layer (op_name).
* copy/transpose for convs: pure data movement whose every user is a convolution (through
  bitcasts): the layout changes, kernel flips and transposes that feed convolutions.
* copy of train state: a copy of an entry parameter (the donated state: parameters,
  optimizer state), which XLA inserts where it cannot update a donated buffer in place.
* copy/transpose: other pure data movement (copy, transpose, reverse, pad, slice,
  concatenate, broadcast, bitcast, reshape, gather, scatter, dynamic (update-)slice).
* fusion/elementwise: any other fusion or elementwise op.
* other: while/conditional/call wrappers, custom calls, sort, and ops not found in the HLO.
"""
CONV_CATEGORIES = (CONV_FWD, CONV_BWD_INPUT, CONV_BWD_FILTER, CONV_OTHER)

_TRACE_PATTERNS = ("perfetto_trace.json.gz", "*.trace.json.gz")
_DATA_MOVEMENT = {"copy", "transpose", "reverse", "pad", "slice", "concatenate", "broadcast",
                  "bitcast", "reshape", "parameter", "constant", "tuple", "get-tuple-element",
                  "dynamic-slice", "dynamic-update-slice", "copy-start", "copy-done", "iota",
                  "bitcast-convert", "gather", "scatter"}
_RNG_OPS = {"rng", "rng-bit-generator", "rng-get-and-update-state"}
_RNG_WORDS = ("threefry", "random_bits", "randint", "_uniform", "bernoulli", "random_",
              "_normal", "rng")
_REDUCE_OPS = {"reduce", "reduce-window", "batch-norm-training", "batch-norm-inference",
               "batch-norm-grad", "select-and-scatter", "reduce-precision"}
_WRAPPERS = {"while", "conditional", "call", "async-start", "async-done"}
_OPTIMIZER_CALLS = ("apply_gradients", "apply_updates", "tx.update")


# ------------------------------------------------------------------------------ trace parsing


def find_trace(logdir: str) -> str:
  """The newest ``perfetto_trace.json.gz`` (else ``*.trace.json.gz``) under ``logdir``."""
  for pattern in _TRACE_PATTERNS:
    paths = glob.glob(os.path.join(logdir, "**", pattern), recursive=True)
    if paths:
      return max(paths, key=os.path.getmtime)
  raise FileNotFoundError(f"no {' or '.join(_TRACE_PATTERNS)} under {logdir!r}; was the trace "
                          "written there (jax.profiler.trace(logdir, create_perfetto_trace=True))?")


def load_trace(path: str) -> list[dict[str, Any]]:
  """The Chrome/perfetto JSON trace's events (gzipped or not)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


@dataclasses.dataclass(frozen=True)
class OpEvent:
  """One execution of one HLO op: times in microseconds, as in the trace.

  ``done``: when the executor marked it complete (XLA:CPU's ``end: <op>`` event), if that
  was after the op's own event ended: an asynchronous thunk (e.g. an Eigen convolution whose
  work runs as thread-pool tasks after its event returns) or a parallel loop whose other
  partitions were still queued.
  """
  name: str
  ts: float
  dur: float
  thread: tuple[Any, Any]  # (pid, tid)
  module: str
  run_id: Optional[str]
  done: Optional[float] = None

  @property
  def open_until(self) -> float:
    return max(self.ts + self.dur, self.done or 0.0)


def _names(events: Iterable[dict[str, Any]]) -> tuple[dict[Any, str], dict[tuple[Any, Any], str]]:
  processes, threads = {}, {}
  for e in events:
    if e.get("ph") != "M":
      continue
    if e.get("name") == "process_name":
      processes[e.get("pid")] = str(e.get("args", {}).get("name", ""))
    elif e.get("name") == "thread_name":
      threads[(e.get("pid"), e.get("tid"))] = str(e.get("args", {}).get("name", ""))
  return processes, threads


def _module_matches(event_module: str, module: str) -> bool:
  # GPU traces may append the program id: 'jit_train_step(123)'.
  return event_module == module or event_module.split("(")[0] == module


def op_events(events: Sequence[dict[str, Any]], module: Optional[str] = None) -> list[OpEvent]:
  """The HLO op executions in a trace (see the module docstring for the rules).

  Args:
    events: the trace's events (:func:`load_trace`).
    module: keep only this HLO module's ops (e.g. 'jit_train_step'); None keeps all.
  """
  processes, threads = _names(events)
  candidates = [e for e in events if e.get("ph") == "X" and "dur" in e
                and isinstance(e.get("args"), dict) and "hlo_op" in e["args"]]
  on_device = [e for e in candidates if processes.get(e.get("pid"), "").startswith("/device:")]
  if on_device:
    ops_lines = {key for key, name in threads.items() if name == "XLA Ops"
                 and processes.get(key[0], "").startswith("/device:")}
    candidates = [e for e in on_device if not ops_lines or (e.get("pid"), e.get("tid")) in ops_lines]
  out = []
  for e in candidates:
    args = e["args"]
    event_module = str(args.get("hlo_module", ""))
    if module is not None and not _module_matches(event_module, module):
      continue
    run_id = args.get("run_id")
    out.append(OpEvent(name=str(args.get("hlo_op") or e.get("name")), ts=float(e["ts"]),
                       dur=float(e["dur"]), thread=(e.get("pid"), e.get("tid")),
                       module=event_module, run_id=None if run_id is None else str(run_id)))
  return _with_completions(out, events)


def _with_completions(ops: list[OpEvent], events: Sequence[dict[str, Any]]) -> list[OpEvent]:
  """Sets ``done`` from the executor's ``end: <op>`` markers: each execution of an op gets the
  first unused marker of its name at or after its start."""
  markers: dict[str, list[float]] = collections.defaultdict(list)
  for e in events:
    name = e.get("name")
    if e.get("ph") == "X" and isinstance(name, str) and name.startswith("end: "):
      markers[name[5:]].append(float(e["ts"]))
  if not markers:
    return ops
  by_name: dict[str, list[int]] = collections.defaultdict(list)
  for i, op in enumerate(ops):
    by_name[op.name].append(i)
  out = list(ops)
  for name, indices in by_name.items():
    times = sorted(markers.get(name, ()))
    k = 0
    for i in sorted(indices, key=lambda i: ops[i].ts):
      while k < len(times) and times[k] < ops[i].ts:
        k += 1
      if k == len(times):
        break
      if times[k] > ops[i].ts + ops[i].dur:
        out[i] = dataclasses.replace(ops[i], done=times[k])
      k += 1
  return out


def pool_regions(events: Sequence[dict[str, Any]], threads: Optional[set] = None
                 ) -> list[tuple[tuple[Any, Any], float, float]]:
  """(thread, start, end) of the thread-pool tasks that tsl's ThreadpoolListener marked
  (StartRegion ... StopRegion), on ``threads`` (all if None). Unnamed: the work of
  asynchronous thunks and of parallel loop partitions shows up only here."""
  marks: dict[tuple[Any, Any], list[tuple[float, int]]] = collections.defaultdict(list)
  for e in events:
    name = e.get("name")
    if name in ("ThreadpoolListener::StartRegion", "ThreadpoolListener::StopRegion"):
      thread = (e.get("pid"), e.get("tid"))
      if threads is None or thread in threads:
        marks[thread].append((float(e["ts"]), 1 if name.endswith("StartRegion") else -1))
  regions = []
  for thread, items in marks.items():
    start = None
    for t, kind in sorted(items):
      if kind == 1 and start is None:
        start = t
      elif kind == -1 and start is not None:
        if t > start:
          regions.append((thread, start, t))
        start = None
  return regions


def worker_threads(ops: Sequence[OpEvent], thread_names: Optional[dict] = None,
                   min_share: float = 0.05) -> set:
  """The compute pool's threads: those named ``*XLAEigen*`` (XLA:CPU's intra-op pool) that
  ran ops, else those that ran at least ``min_share`` of the op events. (XLA:CPU's client
  threads, ``tf_XLAPjRtCpuClient``, run some thunks too, but their pool tasks are mostly
  waits for the whole program.)"""
  counts = collections.Counter(op.thread for op in ops)
  eigen = {t for t in counts if "XLAEigen" in (thread_names or {}).get(t, "")}
  return eigen or {thread for thread, n in counts.items() if n >= min_share * len(ops)}


def _self_segments(ops: Sequence[OpEvent]) -> list[tuple[float, float, int]]:
  """Per thread, each op's own time as (start, end, op index) pieces, nested ops cut out."""
  by_thread: dict[Any, list[int]] = collections.defaultdict(list)
  for i, op in enumerate(ops):
    by_thread[op.thread].append(i)
  segments = []
  for indices in by_thread.values():
    indices.sort(key=lambda i: (ops[i].ts, -ops[i].dur))
    stack: list[tuple[int, float]] = []  # (op index, time its current piece started)

    def close_until(t):
      while stack and ops[stack[-1][0]].ts + ops[stack[-1][0]].dur <= t:
        i, start = stack.pop()
        end = ops[i].ts + ops[i].dur
        if end > start:
          segments.append((start, end, i))
        if stack:  # the parent resumes where its child ended
          stack[-1] = (stack[-1][0], end)

    for i in indices:
      op = ops[i]
      close_until(op.ts)
      if stack:  # a nested op: cut the parent's piece here
        parent, start = stack[-1]
        if op.ts > start:
          segments.append((start, op.ts, parent))
      stack.append((i, op.ts))
    close_until(math.inf)
  return segments


@dataclasses.dataclass
class Attribution:
  """Times in microseconds (see :func:`attribute`)."""
  self_us: list[float]  # per op execution: its thread time
  attributed_us: list[float]  # per op execution: its share of wall time
  busy_us: float  # wall time during which any op or pool task ran
  pool_us: float  # wall time given to open ops from pool tasks that ran outside op events
  unassigned_us: float  # wall time of pool tasks while no op was open


def attribute(ops: Sequence[OpEvent],
              regions: Sequence[tuple[tuple[Any, Any], float, float]] = ()) -> Attribution:
  """Self (thread) and attributed (wall) time per op execution.

  At every instant, each thread counts once: a thread inside an op event counts for its
  innermost op; a thread inside a pool task (``regions``) but no op event counts for the
  ops that are open then (started, not yet ``done``), split equally: the work of
  asynchronous thunks and parallel loop partitions. The instant's wall time is split
  equally between the counting threads, so attributed times (plus unassigned pool time)
  add up to ``busy``. Self time: the thread time an op got, the same way.
  """
  segments = _self_segments(ops)
  bounds: set[float] = set()
  for start, end, _ in segments:
    bounds.update((start, end))
  for _, start, end in regions:
    bounds.update((start, end))
  for op in ops:
    bounds.update((op.ts, op.open_until))
  times = sorted(bounds)
  index = {t: k for k, t in enumerate(times)}
  changes: dict[int, list[tuple[str, Any, int]]] = collections.defaultdict(list)
  for n, (start, end, i) in enumerate(segments):
    changes[index[start]].append(("seg+", ops[i].thread, i))
    changes[index[end]].append(("seg-", ops[i].thread, i))
  for thread, start, end in regions:
    changes[index[start]].append(("pool+", thread, 0))
    changes[index[end]].append(("pool-", thread, 0))
  for i, op in enumerate(ops):
    changes[index[op.ts]].append(("open+", None, i))
    changes[index[op.open_until]].append(("open-", None, i))
  self_us = [0.0] * len(ops)
  attributed = [0.0] * len(ops)
  running: dict[Any, int] = {}  # thread -> innermost op
  pooled: collections.Counter = collections.Counter()  # thread -> open pool regions
  open_ops: set[int] = set()
  busy = pool = unassigned = 0.0
  order = {"seg-": 0, "pool-": 0, "open-": 0, "seg+": 1, "pool+": 1, "open+": 1}
  for k, t in enumerate(times):
    for kind, thread, i in sorted(changes.get(k, ()), key=lambda c: order[c[0]]):
      if kind == "seg+":
        running[thread] = i
      elif kind == "seg-" and running.get(thread) == i:
        del running[thread]
      elif kind == "pool+":
        pooled[thread] += 1
      elif kind == "pool-":
        pooled[thread] -= 1
      elif kind == "open+":
        open_ops.add(i)
      elif kind == "open-":
        open_ops.discard(i)
    if k + 1 == len(times):
      break
    width = times[k + 1] - t
    pool_threads = sum(1 for thread, n in pooled.items() if n > 0 and thread not in running)
    units = len(running) + pool_threads
    if not units:
      continue
    busy += width
    share = width / units
    for i in running.values():
      self_us[i] += width
      attributed[i] += share
    if pool_threads:
      if open_ops:
        each = pool_threads / len(open_ops)
        for i in open_ops:
          self_us[i] += width * each
          attributed[i] += share * each
        pool += share * pool_threads
      else:
        unassigned += share * pool_threads
  return Attribution(self_us, attributed, busy, pool, unassigned)


# ------------------------------------------------------------------------------ HLO


@dataclasses.dataclass
class Instruction:
  """One HLO instruction from ``compiled.as_text()``."""
  name: str
  opcode: str
  shapes: list[tuple[str, tuple[int, ...]]]  # (dtype, dims); several for a tuple
  operands: list[str]
  attrs: str
  computation: str
  op_name: str = ""
  stack_frame: Optional[int] = None


@dataclasses.dataclass
class OpInfo:
  """What the profile says about one executed op name."""
  kind: str  # HLO opcode; fusions: 'fusion(<kind>: <main ops>)'
  category: str
  source: str = ""  # innermost user frame, 'path:line function'
  flops: float = 0.0  # convolutions only (by formula), per execution
  detail: str = ""


_SHAPE = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")
_HEAD = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*")


def _split_balanced(text: str, start: int) -> int:
  """Index just past the bracket group opening at ``text[start]``."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  depth, closing = 0, []
  for k in range(start, len(text)):
    c = text[k]
    if c in pairs:
      closing.append(pairs[c])
      depth += 1
    elif closing and c == closing[-1]:
      closing.pop()
      depth -= 1
      if depth == 0:
        return k + 1
  return len(text)


def _parse_instruction(line: str, computation: str) -> Optional[Instruction]:
  head = _HEAD.match(line)
  if not head:
    return None
  rest = line[head.end():]
  if rest.startswith("("):
    end = _split_balanced(rest, 0)
    shape_text, rest = rest[:end], rest[end:]
  else:
    parts = rest.split(" ", 1)
    if len(parts) < 2:
      return None
    shape_text, rest = parts
  opcode = re.match(r"\s*([\w\-]+)\(", rest)
  if not opcode:
    return None
  open_at = rest.index("(", opcode.start(1))
  close_at = _split_balanced(rest, open_at)
  operands = re.findall(r"%([\w.\-]+)", rest[open_at:close_at])
  attrs = rest[close_at:]
  shapes = [(d, tuple(int(x) for x in dims.split(",") if x)) for d, dims in _SHAPE.findall(shape_text)]
  op_name = re.search(r'op_name="([^"]*)"', attrs)
  frame = re.search(r"stack_frame_id=(\d+)", attrs)
  return Instruction(head.group(1), opcode.group(1), shapes, operands, attrs, computation,
                     op_name.group(1) if op_name else "", int(frame.group(1)) if frame else None)


def _parse_sources(hlo: str) -> dict[int, str]:
  """stack_frame_id -> 'file:line function' of its innermost frame (jax's HLO source tables)."""
  tables: dict[str, dict[int, str]] = {}
  section = None
  for line in hlo.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section, tables[line] = line, {}
      continue
    if section is None:
      continue
    match = re.match(r"^(\d+)\s+(.*)$", line)
    if not match:
      section = None
      continue
    tables[section][int(match.group(1))] = match.group(2)
  files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
  functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
  locations = {}
  for k, v in tables.get("FileLocations", {}).items():
    fields = dict(re.findall(r"(\w+)=(\d+)", v))
    path = files.get(int(fields.get("file_name_id", -1)), "?")
    if path.startswith(harness.REPO + os.sep):
      path = os.path.relpath(path, harness.REPO)
    function = functions.get(int(fields.get("function_name_id", -1)), "")
    locations[k] = (path, int(fields.get("line", 0)), function)
  frames = {}
  for k, v in tables.get("StackFrames", {}).items():
    location = re.search(r"file_location_id=(\d+)", v)
    if location and int(location.group(1)) in locations:
      frames[k] = locations[int(location.group(1))]
  return {k: f"{path}:{line} {function}" for k, (path, line, function) in frames.items()}


def parse_hlo(hlo: str) -> tuple[dict[str, Instruction], dict[str, list[Instruction]], str, dict[int, str]]:
  """HLO module text -> ({instruction name: instruction}, {computation: its instructions},
  entry computation name, {stack frame id: source})."""
  instructions: dict[str, Instruction] = {}
  computations: dict[str, list[Instruction]] = {}
  entry, current = "", None
  for line in hlo.splitlines():
    if current is None:
      header = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
      if header and not line.startswith("HloModule"):
        current = header.group(2)
        computations[current] = []
        if header.group(1):
          entry = current
      continue
    if line.startswith("}"):
      current = None
      continue
    inst = _parse_instruction(line, current)
    if inst is not None:
      instructions[inst.name] = inst
      computations[current].append(inst)
  return instructions, computations, entry, _parse_sources(hlo)


def _called(inst: Instruction) -> list[str]:
  names = []
  for key in ("calls", "to_apply", "body", "condition", "branch_computations"):
    match = re.search(rf"\b{key}=(\{{[^}}]*\}}|%?[\w.\-]+)", inst.attrs)
    if match:
      names += re.findall(r"%?([\w.\-]+)", match.group(1).strip("{}"))
  return names


def _window_dims(window: str, key: str, n: int, default: int) -> list[int]:
  match = re.search(rf"\b{key}=([0-9x]+)", window)
  return [int(v) for v in match.group(1).split("x")] if match else [default] * n


def _valid_taps(size: int, out: int, k: int, stride: int, lo: int, lhs_dil: int, rhs_dil: int) -> int:
  """(output position, kernel tap) pairs of one spatial dim that hit a real input element."""
  last = (size - 1) * lhs_dil
  count = 0
  for o in range(out):
    for t in range(k):
      p = o * stride + t * rhs_dil - lo
      if 0 <= p <= last and p % lhs_dil == 0:
        count += 1
  return count


def conv_flops(inst: Instruction, shapes: dict[str, tuple[int, ...]]) -> float:
  """Multiply-adds x 2 of an HLO convolution that touch real inputs (padding and the holes of
  lhs dilation excluded); 0 when a shape is unknown."""
  labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", inst.attrs)
  if not labels or len(inst.operands) < 2 or not inst.shapes:
    return 0.0
  lhs_l, rhs_l, out_l = labels.groups()
  lhs, rhs, out = shapes.get(inst.operands[0]), shapes.get(inst.operands[1]), inst.shapes[0][1]
  if lhs is None or rhs is None or len(lhs) != len(lhs_l) or len(rhs) != len(rhs_l) or len(out) != len(out_l):
    return 0.0
  spatial = sorted(c for c in out_l if c.isdigit())
  window = re.search(r"window=\{([^}]*)\}", inst.attrs)
  window = window.group(1) if window else ""
  n = len(spatial)
  sizes = _window_dims(window, "size", n, 1)
  strides = _window_dims(window, "stride", n, 1)
  lhs_dil = _window_dims(window, "lhs_dilate", n, 1)
  rhs_dil = _window_dims(window, "rhs_dilate", n, 1)
  pads = re.search(r"\bpad=([0-9_x\-]+)", window)
  lows = [int(p.split("_")[0]) for p in pads.group(1).split("x")] if pads else [0] * n
  taps = 1
  for d, c in enumerate(spatial):
    taps *= _valid_taps(lhs[lhs_l.index(c)], out[out_l.index(c)], sizes[d], strides[d], lows[d],
                        lhs_dil[d], rhs_dil[d])
  return 2.0 * out[out_l.index("b")] * out[out_l.index("f")] * rhs[rhs_l.index("i")] * taps


def _conv_detail(inst: Instruction, shapes: dict[str, tuple[int, ...]]) -> str:
  window = re.search(r"window=\{([^}]*)\}", inst.attrs)
  labels = re.search(r"dim_labels=(\S+?)[,\s]", inst.attrs + " ")
  lhs = shapes.get(inst.operands[0]) if inst.operands else None
  rhs = shapes.get(inst.operands[1]) if len(inst.operands) > 1 else None
  out = inst.shapes[0][1] if inst.shapes else None
  fmt = lambda s: "x".join(map(str, s)) if s is not None else "?"
  return (f"{fmt(lhs)} * {fmt(rhs)} -> {fmt(out)} [{window.group(1) if window else ''}"
          f"{' ' + labels.group(1) if labels else ''}]")


class HloIndex:
  """Labels executed op names with their HLO kind, category, source line and FLOPs."""

  def __init__(self, hlo: str):
    self.instructions, self.computations, self.entry, self.sources = parse_hlo(hlo)
    self.module = (re.match(r"^HloModule\s+([\w.\-]+)", hlo) or [None, None])[1]
    self.shapes = {n: i.shapes[0][1] for n, i in self.instructions.items() if i.shapes}
    entry = self.computations.get(self.entry, [])
    self.parameters = {i.name: i for i in entry if i.opcode == "parameter"}
    self.kernel_dims = {tuple(sorted(i.shapes[0][1])) for i in self.parameters.values()
                        if i.shapes and len(i.shapes[0][1]) >= 4}
    self.users: dict[str, list[Instruction]] = collections.defaultdict(list)
    for inst in self.instructions.values():
      for operand in set(inst.operands):
        self.users[operand].append(inst)
    self._cache: dict[str, OpInfo] = {}

  def _body(self, inst: Instruction) -> list[Instruction]:
    """Instructions of the computations a fusion calls, recursively (not of loop bodies)."""
    if inst.opcode != "fusion":
      return [inst]
    out, todo, seen = [], list(_called(inst)), set()
    while todo:
      name = todo.pop()
      if name in seen or name not in self.computations:
        continue
      seen.add(name)
      for member in self.computations[name]:
        out.append(member)
        if member.opcode == "fusion":
          todo.extend(_called(member))
    return out

  def _source(self, inst: Instruction, body: Sequence[Instruction]) -> str:
    for candidate in [inst, *body]:
      if candidate.stack_frame is not None and candidate.stack_frame in self.sources:
        return self.sources[candidate.stack_frame]
    return ""

  def _has_conv(self, inst: Instruction) -> bool:
    return any(m.opcode == "convolution" or (m.opcode == "custom-call" and re.search(
        r'custom_call_target="[^"]*conv', m.attrs, re.I)) for m in self._body(inst))

  def _feeds_convs(self, inst: Instruction) -> bool:
    """Whether every user of ``inst`` is a convolution (or a fusion with one), past bitcasts."""
    users, seen = list(self.users.get(inst.name, ())), set()
    if not users:
      return False
    while users:
      user = users.pop()
      if user.name in seen:
        continue
      seen.add(user.name)
      if user.opcode == "bitcast":
        if not self.users.get(user.name):
          return False
        users.extend(self.users[user.name])
      elif not self._has_conv(user):
        return False
    return True

  def _reads_opt_state(self, inst: Instruction) -> bool:
    for name in inst.operands:
      operand = self.instructions.get(name)
      if operand is not None and operand.opcode in ("copy", "bitcast") and operand.operands:
        name = operand.operands[0]
      if name in self.parameters and "opt_state" in name:
        return True
    return False

  def _is_optimizer(self, inst: Instruction) -> bool:
    """Compute (not pure data movement) that reads optimiser state or comes from an update line."""
    body = self._body(inst)
    if inst.opcode in _WRAPPERS or inst.opcode == "copy" or {m.opcode for m in body} <= _DATA_MOVEMENT:
      return False
    if self._reads_opt_state(inst):
      return True
    line = _source_line(self._source(inst, body))
    return any(call in line for call in _OPTIMIZER_CALLS)

  def _feeds_optimizer(self, inst: Instruction, depth: int = 4) -> bool:
    """Whether ``inst``'s result reaches an optimiser update, past pure data movement: a
    parameter gradient (the kernel gradient of a convolution)."""
    frontier, seen = [inst], {inst.name}
    for _ in range(depth):
      following = []
      for node in frontier:
        for user in self.users.get(node.name, ()):
          if user.name in seen:
            continue
          seen.add(user.name)
          if self._is_optimizer(user):
            return True
          if user.opcode != "fusion" and user.opcode in _DATA_MOVEMENT or (
              user.opcode == "fusion" and {m.opcode for m in self._body(user)} <= _DATA_MOVEMENT):
            following.append(user)
      frontier = following
    return False

  def _conv_direction(self, inst: Instruction, conv: Instruction, op_names: Sequence[str]) -> str:
    target = re.search(r'custom_call_target="([^"]*)"', conv.attrs)
    if target:
      t = target.group(1).lower()
      return (CONV_BWD_FILTER if "backwardfilter" in t else CONV_BWD_INPUT if "backwardinput" in t
              else CONV_FWD)
    names = [n for n in op_names if n]
    backward = any("transpose(" in n for n in names)
    if names and not backward:
      return CONV_FWD
    if self._feeds_optimizer(inst):
      return CONV_BWD_FILTER
    if backward:
      return CONV_BWD_INPUT
    out = conv.shapes[0][1] if conv.shapes else ()
    return CONV_BWD_FILTER if tuple(sorted(out)) in self.kernel_dims else CONV_OTHER

  def info(self, name: str) -> OpInfo:
    """The labels of one executed op (its HLO instruction name)."""
    if name not in self._cache:
      self._cache[name] = self._info(name)
    return self._cache[name]

  def _info(self, name: str) -> OpInfo:
    inst = self.instructions.get(name)
    if inst is None:
      return OpInfo(kind="?", category=_category_from_name(name), detail="not in the HLO text")
    body = self._body(inst)
    opcodes = collections.Counter(m.opcode for m in body)
    # Constants are deduplicated across the program: their op_name may be any user's.
    op_names = [m.op_name for m in [inst, *body] if m.opcode not in ("constant", "parameter")]
    source = self._source(inst, body)
    convs = [m for m in body if m.opcode == "convolution" or (
        m.opcode == "custom-call" and re.search(r'custom_call_target="[^"]*conv', m.attrs, re.I))]
    kind = inst.opcode
    if inst.opcode == "fusion":
      fusion_kind = re.search(r"kind=(\w+)", inst.attrs)
      backend = re.search(r'"kind":"(\w+)"', inst.attrs)
      label = backend.group(1).strip("_") if backend else (fusion_kind.group(1) if fusion_kind else "")
      main = [op for op in ("convolution", "dot", "reduce", "reduce-window", "custom-call",
                            "transpose", "reverse") if opcodes.get(op)]
      kind = f"fusion({label}{': ' + '+'.join(main) if main else ''})"
    elif inst.opcode == "custom-call":
      target = re.search(r'custom_call_target="([^"]*)"', inst.attrs)
      kind = f"custom-call({target.group(1) if target else ''})"
    flops = sum(conv_flops(c, self.shapes) for c in convs)
    if convs:
      direction = self._conv_direction(inst, convs[0], [inst.op_name, *[c.op_name for c in convs]])
      return OpInfo(kind, direction, source, flops, _conv_detail(convs[0], self.shapes))
    detail = ""
    if inst.opcode == "copy" and inst.operands and inst.operands[0] in self.parameters:
      detail = f"copy of entry parameter {inst.operands[0]}"
    lower_names = " ".join(op_names).lower()
    if opcodes.get("dot") or re.search(r'custom_call_target="[^"]*(gemm|matmul|cublas)', inst.attrs, re.I):
      category = DOT
    elif opcodes.keys() & _RNG_OPS or any(w in lower_names for w in _RNG_WORDS) or (
        source.split(":")[0].endswith("masks.py")):
      category = RNG
    elif self._is_optimizer(inst):
      category = OPTIMIZER
    elif opcodes.keys() & _REDUCE_OPS or "batchnorm" in lower_names:
      category = REDUCE
    elif inst.opcode in _WRAPPERS or inst.opcode == "custom-call":
      category = OTHER
    elif inst.opcode == "copy" and inst.operands and inst.operands[0] in self.parameters:
      category = COPY_STATE
    elif set(opcodes) <= _DATA_MOVEMENT:
      category = COPY_CONV if self._feeds_convs(inst) else COPY
    elif inst.opcode == "fusion" or opcodes:
      category = ELEMENTWISE
    else:
      category = OTHER
    return OpInfo(kind, category, source, 0.0, detail)


def _source_line(source: str) -> str:
  """The text of a 'path:line function' source (relative paths are under the repo)."""
  match = re.match(r"^(.*):(\d+)\s", source + " ")
  if not match:
    return ""
  path = match.group(1)
  path = path if os.path.isabs(path) else os.path.join(harness.REPO, path)
  return linecache.getline(path, int(match.group(2)))


def _category_from_name(name: str) -> str:
  """Fallback without HLO text: XLA's instruction names start with the op or fusion kind."""
  n = name.lower()
  if "conv" in n:
    return CONV_OTHER
  if "dot" in n or "gemm" in n:
    return DOT
  if "rng" in n or "threefry" in n:
    return RNG
  if "reduce" in n:
    return REDUCE
  if n.startswith(("copy", "transpose", "bitcast", "reverse", "slice", "concatenate", "pad")):
    return COPY
  if "fusion" in n:
    return ELEMENTWISE
  return OTHER


# ------------------------------------------------------------------------------ summary


def summarize(ops: Sequence[OpEvent], *, steps: int, wall_s: float,
              index: Optional[HloIndex] = None, top_k: int = 25,
              regions: Sequence[tuple[tuple[Any, Any], float, float]] = ()) -> dict[str, Any]:
  """Per-op and per-category times of ``steps`` traced steps that took ``wall_s`` seconds.

  Times in the result are ms per step (:func:`attribute`): ``ops_ms`` is the attributed
  total (``busy_ms`` less ``unassigned_pool_ms``), of which ``pool_ms`` came from pool tasks
  outside op events; ``self_ms`` is the ops' thread time; ``concurrency`` = self / attributed.
  """
  if steps < 1 or wall_s <= 0:
    raise ValueError(f"need steps >= 1 and wall_s > 0; got {steps}, {wall_s}.")
  timing = attribute(ops, regions)
  self_us, attributed_us, busy_us = timing.self_us, timing.attributed_us, timing.busy_us
  per_op: dict[str, dict[str, float]] = collections.defaultdict(
      lambda: {"count": 0, "self": 0.0, "attr": 0.0})
  for op, s, a in zip(ops, self_us, attributed_us):
    entry = per_op[op.name]
    entry["count"] += 1
    entry["self"] += s
    entry["attr"] += a
  wall_ms = 1000.0 * wall_s / steps
  rows = []
  for name, v in per_op.items():
    info = index.info(name) if index is not None else OpInfo("?", _category_from_name(name))
    attr_ms, self_ms = v["attr"] / 1000.0 / steps, v["self"] / 1000.0 / steps
    flops = info.flops * v["count"] / steps
    rows.append({"op": name, "kind": info.kind, "category": info.category, "source": info.source,
                 "detail": info.detail, "count_per_step": v["count"] / steps, "ms": attr_ms,
                 "self_ms": self_ms, "pct_of_step": 100.0 * attr_ms / wall_ms,
                 "gflop": flops / 1e9 if flops else None,
                 "gflops_per_s": flops / 1e9 / (self_ms / 1000.0) if flops and self_ms > 0 else None})
  rows.sort(key=lambda r: -r["ms"])
  categories = []
  for category in CATEGORIES:
    members = [r for r in rows if r["category"] == category]
    if not members:
      continue
    ms, self_ms = sum(r["ms"] for r in members), sum(r["self_ms"] for r in members)
    gflop = sum(r["gflop"] or 0.0 for r in members)
    categories.append({"category": category, "ms": ms, "self_ms": self_ms,
                       "pct_of_step": 100.0 * ms / wall_ms,
                       "ops": len(members), "count_per_step": sum(r["count_per_step"] for r in members),
                       "gflop": gflop or None,
                       "gflops_per_s": gflop / (self_ms / 1000.0) if gflop and self_ms > 0 else None})
  total_ms = sum(r["ms"] for r in rows)
  self_total = sum(r["self_ms"] for r in rows)
  executions = len({op.run_id for op in ops if op.run_id is not None})
  return {"steps": steps, "wall_ms_per_step": wall_ms, "busy_ms": busy_us / 1000.0 / steps,
          "ops_ms": total_ms, "self_ms": self_total,
          "pool_ms": timing.pool_us / 1000.0 / steps,
          "unassigned_pool_ms": timing.unassigned_us / 1000.0 / steps,
          "concurrency": self_total / total_ms if total_ms else None,
          "pct_of_step_in_ops": 100.0 * total_ms / wall_ms, "op_events": len(ops),
          "executions_seen": executions or None, "distinct_ops": len(rows),
          "module": index.module if index is not None else None,
          "top": rows[:top_k], "categories": categories, "all_ops": rows}


def _fmt(value: Optional[float], spec: str = ".1f") -> str:
  return "-" if value is None else format(value, spec)


def format_summary(summary: dict[str, Any], top_k: Optional[int] = None) -> str:
  """The summary's top-ops and category tables as text (GitHub markdown)."""
  s = summary
  head = (f"{s['steps']} traced steps: {s['wall_ms_per_step']:.1f} ms/step wall; ops "
          f"{s['ops_ms']:.1f} ms/step ({s['pct_of_step_in_ops']:.0f}% of wall; {s['pool_ms']:.1f} of it "
          f"from pool tasks outside op events, {s['unassigned_pool_ms']:.1f} ms pool time with no op "
          f"open); op thread times add up to {s['self_ms']:.1f} ms/step "
          f"(x{_fmt(s['concurrency'], '.2f')} concurrency); "
          f"{s['distinct_ops']} distinct ops, {s['op_events']} op events")
  if s["executions_seen"]:
    head += f", {s['executions_seen']} executions"
  head += "."
  if s.get("untraced_wall_ms_per_step"):
    head += f" Untraced: {s['untraced_wall_ms_per_step']:.1f} ms/step."
  rows = [(i + 1, r["op"][:40], r["kind"][:34], r["category"], f"{r['count_per_step']:.3g}",
           f"{r['ms']:.2f}", f"{r['pct_of_step']:.1f}", f"{r['self_ms']:.2f}", _fmt(r["gflop"], ".3f"),
           _fmt(r["gflops_per_s"]), r["source"][-48:])
          for i, r in enumerate(s["top"][:top_k] if top_k else s["top"])]
  top = harness.format_table(rows, ("#", "op", "HLO kind", "category", "count/step", "ms/step",
                                    "% step", "self ms", "GFLOP", "GFLOP/s", "source"))
  cat_rows = [(c["category"], f"{c['ms']:.2f}", f"{c['pct_of_step']:.1f}", f"{c['self_ms']:.2f}",
               c["ops"], f"{c['count_per_step']:.3g}", _fmt(c["gflop"], ".3f"), _fmt(c["gflops_per_s"]))
              for c in s["categories"]]
  cats = harness.format_table(cat_rows, ("category", "ms/step", "% step", "self ms", "ops",
                                         "count/step", "GFLOP", "GFLOP/s"))
  return (f"{head}\n\nTop ops by attributed time (ms/step; self = time on its own thread; "
          f"GFLOP/s = FLOPs / self time):\n{top}\n\nBy category:\n{cats}")


# ------------------------------------------------------------------------------ jax side


class TorchPeer:
  """The eager PyTorch peer of a model (:mod:`benchmarks.torch_peers`) at the settings of a
  jaxpaint record (as :func:`benchmarks.torch_peers.compare` builds it); one step per call."""

  def __init__(self, model: str, record: dict[str, Any], dtype: str = "float32"):
    from benchmarks import torch_peers  # noqa: PLC0415 (torch is optional)
    self._peers = torch_peers
    self.torch = torch_peers._torch()  # noqa: SLF001
    self.device = self.torch.device("cuda" if self.torch.cuda.is_available() else "cpu")
    config = torch_peers._config_for_peer(record)  # noqa: SLF001
    make = torch_peers.pix2pix_step_fn if model == "pix2pix" else torch_peers.pconv_step_fn
    self.torch.manual_seed(0)
    self._step = make(self.torch, config, self.device, dtype, compile_models=False)
    self.loss = None

  def __call__(self) -> None:
    self.loss = self._step()
    self._peers._sync(self.torch, self.device)  # noqa: SLF001

  def profiler(self):
    activities = [self.torch.profiler.ProfilerActivity.CPU]
    if self.device.type == "cuda":
      activities.append(self.torch.profiler.ProfilerActivity.CUDA)
    return self.torch.profiler.profile(activities=activities)


def _timed(step) -> float:
  start = time.perf_counter()
  step()
  return time.perf_counter() - start


def profile_program(program: harness.Program, *, steps: int, warmup: int, logdir: str,
                    untraced: bool = True, top_k: int = 25, peer: Optional[TorchPeer] = None,
                    interleave: bool = False) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
  """Compiles and warms ``program`` up untraced, then traces ``steps`` blocked steps into
  ``logdir`` and summarises the trace (:func:`summarize`); also writes the summary as JSON
  (and the program's HLO text) next to the trace.

  With a ``peer``, it is profiled under ``torch.profiler`` for ``steps`` steps too. With
  ``interleave``, its steps alternate with jaxpaint's (untraced and traced), so both see the
  same machine load, and jax's Python tracer is off (it would slow the peer's Python);
  otherwise the peer runs after jaxpaint's trace is closed. Returns (jaxpaint summary, the
  peer's summary or None).
  """
  import jax  # noqa: PLC0415
  if steps < 1 or warmup < 0:
    raise ValueError(f"need steps >= 1 and warmup >= 0; got {steps}, {warmup}.")
  runner = harness.Runner(program)
  runner.warmup(warmup)

  def jax_step():
    runner._call()  # noqa: SLF001 (the harness's own call: key rotation, state carry)
    jax.block_until_ready(runner.out)

  alternate = peer if peer is not None and interleave else None
  for _ in range(max(warmup, 1) if peer else 0):
    peer()
  untraced_s, peer_untraced_s = [], []
  for _ in range(steps if untraced else 0):
    untraced_s.append(_timed(jax_step))
    if alternate:
      peer_untraced_s.append(_timed(alternate))
  os.makedirs(logdir, exist_ok=True)
  before = set(glob.glob(os.path.join(logdir, "**", _TRACE_PATTERNS[0]), recursive=True))
  options = jax.profiler.ProfileOptions()
  if alternate:
    options.python_tracer_level = 0
  jax_s, peer_s = [], []
  torch_prof = alternate.profiler() if alternate else None
  if torch_prof is not None:
    torch_prof.__enter__()
  try:
    with jax.profiler.trace(logdir, create_perfetto_trace=True, profiler_options=options):
      for i in range(steps):
        with jax.profiler.StepTraceAnnotation("train", step_num=i):
          jax_s.append(_timed(jax_step))
        if alternate:
          peer_s.append(_timed(alternate))
  finally:
    if torch_prof is not None:
      torch_prof.__exit__(None, None, None)
  if peer is not None and not interleave:
    peer_untraced_s = [_timed(peer) for _ in range(steps if untraced else 0)]
    torch_prof = peer.profiler()
    with torch_prof:
      peer_s = [_timed(peer) for _ in range(steps)]
  new = [p for p in glob.glob(os.path.join(logdir, "**", _TRACE_PATTERNS[0]), recursive=True)
         if p not in before]
  trace = max(new, key=os.path.getmtime) if new else find_trace(logdir)
  hlo = runner.compiled.as_text() or ""
  with open(os.path.join(os.path.dirname(trace), "program.hlo.txt"), "w") as f:
    f.write(hlo)  # the names the trace's ops refer to
  index = HloIndex(hlo)
  events = load_trace(trace)
  ops = op_events(events, module=index.module)
  if not ops:
    raise RuntimeError(f"no op events of module {index.module!r} in {trace}; see "
                       "benchmarks/profile.py's docstring for what is matched.")
  summary = summarize(ops, steps=steps, wall_s=sum(jax_s), index=index, top_k=top_k,
                      regions=pool_regions(events, worker_threads(ops, _names(events)[1])))
  cost = harness._cost(runner.compiled)  # noqa: SLF001 (same cost analysis as the benchmarks)
  summary.update(trace=trace, step_ms=[1000.0 * t for t in jax_s],
                 untraced_wall_ms_per_step=1000.0 * sum(untraced_s) / steps if untraced_s else None,
                 xla_flops_per_step=float(cost["flops"]) if cost.get("flops") else None,
                 conv_flops_per_step=sum(r["gflop"] or 0.0 for r in summary["all_ops"]) * 1e9,
                 compile_s=runner.compile_s, interleaved_with_torch=peer is not None)
  peer_summary = None
  if peer:
    peer_summary = torch_summary(torch_prof, steps=steps, wall_s=sum(peer_s), device=peer.device,
                                 top_k=top_k)
    peer_summary.update(torch=peer.torch.__version__, threads=peer.torch.get_num_threads(),
                        step_ms=[1000.0 * t for t in peer_s], interleaved=interleave,
                        untraced_wall_ms_per_step=(1000.0 * sum(peer_untraced_s) / steps
                                                   if peer_untraced_s else None))
  with open(os.path.join(os.path.dirname(trace), "profile_summary.json"), "w") as f:
    json.dump({**summary, "torch_peer": peer_summary}, f, indent=1, default=str)
  return summary, peer_summary


def summarize_run(run_dir: str, top_k: int = 25) -> dict[str, Any]:
  """Re-summarises a profile written by :func:`profile_program` (its trace, ``program.hlo.txt``
  and ``profile_summary.json`` in ``run_dir``), e.g. after the labelling rules changed."""
  with open(os.path.join(run_dir, "profile_summary.json")) as f:
    saved = json.load(f)
  with open(os.path.join(run_dir, "program.hlo.txt")) as f:
    index = HloIndex(f.read())
  events = load_trace(find_trace(run_dir))
  ops = op_events(events, module=index.module)
  summary = summarize(ops, steps=saved["steps"], wall_s=sum(saved["step_ms"]) / 1000.0, index=index,
                      top_k=top_k, regions=pool_regions(events, worker_threads(ops, _names(events)[1])))
  keep = {k: v for k, v in saved.items() if k not in summary}
  return {**keep, **summary}


# ------------------------------------------------------------------------------ torch side


_TORCH_RULES = (  # (category, substrings of an op or one of its ancestors), first match wins
    (OPTIMIZER, ("optimizer.step", "_foreach", "adam")),
    ("conv bwd (input+filter)", ("convolution_backward", "convolutionbackward", "mkldnn_convolution_backward",
                                 "slow_conv2d_backward", "slow_conv_transpose2d_backward")),
    (CONV_FWD, ("conv", "mkldnn_convolution")),
    (RNG, ("randint", "rand", "bernoulli", "uniform_", "normal_", "dropout")),
    (REDUCE, ("batch_norm", "batchnorm", "sum", "mean", "norm", "any", "max", "min", "amax")),
    (COPY, ("copy_", "cat", "contiguous", "clone", "permute", "transpose", "flip", "index",
            "stack", "expand", "slice", "view", "reshape", "as_strided", "narrow", "interpolate",
            "upsample", "to", "_to_copy", "empty", "zeros", "fill_", "zero_")),
)


def _torch_category(chain: Sequence[str]) -> str:
  """Category of a torch op from its name and its ancestors' (``chain``, innermost first):
  everything under Optimizer.step is the optimizer; under a convolution (backward), conv."""
  lowered = [c.lower() for c in chain]
  for category, words in _TORCH_RULES:
    for name in lowered:
      if category == COPY:
        base = name.split("::")[-1]
        if any(base == w or base.startswith(w) for w in words):
          return category
      elif any(w in name for w in words):
        return category
  return ELEMENTWISE


def torch_summary(prof, *, steps: int, wall_s: float, device, top_k: int = 25) -> dict[str, Any]:
  """A finished ``torch.profiler.profile``'s top ops (key_averages) and category rollup
  (self times, ms per step) for ``steps`` steps that took ``wall_s`` seconds."""
  cuda = getattr(device, "type", str(device)) == "cuda"
  sort_by = "self_cuda_time_total" if cuda else "self_cpu_time_total"
  table = prof.key_averages().table(sort_by=sort_by, row_limit=top_k)
  wall_ms = 1000.0 * wall_s / steps
  totals: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"ms": 0.0, "count": 0})
  for event in prof.events():
    own = (getattr(event, "self_device_time_total", 0.0) if cuda else event.self_cpu_time_total)
    if own <= 0:
      continue
    chain, parent = [event.name], event.cpu_parent
    while parent is not None:
      chain.append(parent.name)
      parent = parent.cpu_parent
    category = _torch_category(chain)
    totals[category]["ms"] += own / 1000.0 / steps
    totals[category]["count"] += 1 / steps
  categories = [{"category": c, "ms": v["ms"], "pct_of_step": 100.0 * v["ms"] / wall_ms,
                 "count_per_step": v["count"]}
                for c, v in sorted(totals.items(), key=lambda kv: -kv[1]["ms"])]
  return {"device": str(device), "steps": steps, "wall_ms_per_step": wall_ms,
          "ops_ms": sum(c["ms"] for c in categories), "categories": categories, "table": table}


def _bucket(category: str) -> str:
  return "conv bwd (input+filter)" if category in (CONV_BWD_INPUT, CONV_BWD_FILTER) else category


def comparison_table(jax_summary: dict[str, Any], torch_summary: dict[str, Any]) -> str:
  """Category by category: ms/step and % of each side's wall step time; for convolutions also
  GFLOP/s of both sides, from jaxpaint's FLOPs (the peer does the same convolutions)."""
  jax_ms: dict[str, float] = collections.defaultdict(float)
  jax_gflop: dict[str, float] = collections.defaultdict(float)
  for c in jax_summary["categories"]:
    jax_ms[_bucket(c["category"])] += c["ms"]
    jax_gflop[_bucket(c["category"])] += c["gflop"] or 0.0
  torch_ms = {c["category"]: c["ms"] for c in torch_summary["categories"]}
  order = [c for c in (CONV_FWD, "conv bwd (input+filter)", CONV_OTHER, DOT, RNG, OPTIMIZER, REDUCE,
                       COPY_CONV, COPY_STATE, COPY, ELEMENTWISE, OTHER) if c in jax_ms or c in torch_ms]
  jw, tw = jax_summary["wall_ms_per_step"], torch_summary["wall_ms_per_step"]

  def rate(gflop, ms):
    return _fmt(gflop / ms * 1000.0 if gflop and ms else None)

  rows = [(c, _fmt(jax_ms.get(c), ".2f"), _fmt(100 * jax_ms[c] / jw if c in jax_ms else None),
           _fmt(torch_ms.get(c), ".2f"), _fmt(100 * torch_ms[c] / tw if c in torch_ms else None),
           _fmt(jax_ms[c] / torch_ms[c] if c in jax_ms and torch_ms.get(c) else None, ".2f"),
           _fmt(jax_gflop.get(c) or None, ".3f"), rate(jax_gflop.get(c), jax_ms.get(c)),
           rate(jax_gflop.get(c), torch_ms.get(c)))
          for c in order]
  rows.append(("wall step", f"{jw:.2f}", "100", f"{tw:.2f}", "100", f"{jw / tw:.2f}",
               _fmt((jax_summary.get("xla_flops_per_step") or 0) / 1e9 or None, ".3f"), "", ""))
  return harness.format_table(rows, ("category", "jaxpaint ms", "% step", "torch ms", "% step",
                                     "jaxpaint/torch", "GFLOP", "jaxpaint GFLOP/s",
                                     "torch GFLOP/s"))


# ------------------------------------------------------------------------------ command line


def build(model: str, *, batch_size: Optional[int], image_size: Optional[int], compute_dtype: str,
          width_scale: float = 1.0, sets: Sequence[tuple[str, Any]] = (), peer_settings: bool = False,
          num_keys: int = 64) -> tuple[dict[str, Any], harness.Program]:
  """The program :mod:`benchmarks.run` times (or, with ``peer_settings``, the one
  :mod:`benchmarks.torch_peers` compares with the PyTorch peer); raises if it cannot be built."""
  from benchmarks import run as run_lib  # noqa: PLC0415 (lazy: keeps this module light)
  if model not in registry.BY_NAME:
    raise ValueError(f"unknown --model {model!r}; choose from {sorted(registry.BY_NAME)}.")
  spec = registry.BY_NAME[model]
  if peer_settings:
    from benchmarks import torch_peers  # noqa: PLC0415
    if model not in torch_peers.PEER_MODELS:
      raise ValueError(f"no PyTorch peer for {model!r}; peers: {torch_peers.PEER_MODELS}.")
    size = image_size or harness.load_config(spec.config_file).image_size
    spec = registry.Spec(f"{model}_vs_torch", spec.config_file, spec.description,
                         sets=torch_peers.jaxpaint_sets(model, size))
  record, program = run_lib.prepare(spec, batch_size, compute_dtype, image_size=image_size,
                                    width_scale=width_scale, sets=sets, num_keys=num_keys)
  if program is None:
    raise RuntimeError(f"{model}: {record['status']}: {record['reason']}")
  return record, program


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="pix2pix", help=f"one of {', '.join(registry.BY_NAME)}")
  p.add_argument("--batch_size", type=int, default=None, help="global batch; default: the config's")
  p.add_argument("--image_size", type=int, default=None, help="as benchmarks.run (depths are lowered)")
  p.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--width_scale", type=float, default=1.0)
  p.add_argument("--set", action="append", default=[], help="key.path=value override (repeatable)")
  p.add_argument("--steps", type=int, default=5, help="traced steps (also timed untraced)")
  p.add_argument("--warmup", type=int, default=2, help="untraced steps after compilation")
  p.add_argument("--logdir", default="/tmp/jaxpaint-profile", help="jax.profiler log directory")
  p.add_argument("--top_k", type=int, default=25)
  p.add_argument("--no_untraced", action="store_true", help="skip the untraced timing")
  p.add_argument("--summarize", default=None, metavar="RUN_DIR",
                 help="only re-summarise a written profile (the folder with profile_summary.json)")
  p.add_argument("--torch_peer", action="store_true", help="also profile the PyTorch peer (needs torch)")
  p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=False,
                 help="alternate jaxpaint and PyTorch steps (same load); else one after the other")
  p.add_argument("--peer_settings", action=argparse.BooleanOptionalAction, default=None,
                 help="run jaxpaint with the peer's masks and loss; default: on with --torch_peer")
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0 or args.top_k < 1:
    p.error("need --steps >= 1, --warmup >= 0 and --top_k >= 1.")
  return args


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Runs the command line; returns {'jaxpaint': summary, 'torch': summary or None}."""
  args = parse_args(argv)
  if args.summarize:
    summary = summarize_run(args.summarize, args.top_k)
    peer = summary.get("torch_peer")
    print(format_summary(summary))
    if peer:
      print(f"\n{peer['table']}\n{comparison_table(summary, peer)}")
    return {"jaxpaint": summary, "torch": peer}
  import jax  # noqa: PLC0415
  peer = args.torch_peer if args.peer_settings is None else args.peer_settings
  record, program = build(args.model, batch_size=args.batch_size, image_size=args.image_size,
                          compute_dtype=args.compute_dtype, width_scale=args.width_scale,
                          sets=harness.parse_sets(args.set), peer_settings=peer,
                          num_keys=2 * args.steps + args.warmup + 2)
  load = os.getloadavg() if hasattr(os, "getloadavg") else None
  print(f"{args.model} [{args.compute_dtype}, batch {record['batch_size']}, {record['image_size']}px] "
        f"on {jax.devices()[0].device_kind}; changes {record['changes']}; load average "
        f"{'/'.join(f'{x:.2f}' for x in load) if load else '?'}", flush=True)
  peer_step = TorchPeer(args.model, record, args.compute_dtype) if args.torch_peer else None
  summary, peer = profile_program(program, steps=args.steps, warmup=args.warmup, logdir=args.logdir,
                                  untraced=not args.no_untraced, top_k=args.top_k, peer=peer_step,
                                  interleave=args.interleave)
  summary.update(model=args.model, record={k: v for k, v in record.items() if k != "model_config"},
                 load_average=load)
  print(format_summary(summary))
  xla, conv = summary["xla_flops_per_step"], summary["conv_flops_per_step"]
  print(f"\nFLOPs/step: XLA cost analysis {harness.human_flops(xla)}; convolutions by formula "
        f"{harness.human_flops(conv)}.\nTrace: {summary['trace']} (open in ui.perfetto.dev); "
        f"summary: {os.path.join(os.path.dirname(summary['trace']), 'profile_summary.json')}")
  if peer is not None:
    untraced = peer["untraced_wall_ms_per_step"]
    order = "its steps alternating with jaxpaint's" if args.interleave else "after jaxpaint's"
    print(f"\nPyTorch {peer['torch']} peer ({peer['device']}, {peer['threads']} threads), eager, "
          f"{order}: {peer['wall_ms_per_step']:.1f} ms/step profiled"
          f"{f', {untraced:.1f} untraced' if untraced else ''}.\n{peer['table']}\n"
          f"Categories, jaxpaint (attributed) vs PyTorch (self time):\n{comparison_table(summary, peer)}")
  with open(os.path.join(os.path.dirname(summary["trace"]), "profile_summary.json"), "w") as f:
    json.dump({**summary, "torch_peer": peer}, f, indent=1, default=str)
  return {"jaxpaint": summary, "torch": peer}


if __name__ == "__main__":
  main()
