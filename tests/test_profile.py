"""benchmarks/profile.py: trace parsing, time attribution, HLO labels, and one real profile.

No timing is asserted: only that the summary accounts for the traced time consistently.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import profile


def _event(name, ts, dur, tid, pid=1, module="jit_step", run_id="7"):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name,
          "args": {"hlo_op": name, "hlo_module": module, "run_id": run_id}}


def _meta(pid, name, tid=None):
  if tid is None:
    return {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}}
  return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}


def test_attribution_splits_overlaps_and_cuts_nested_ops():
  # Thread 1: 'while' [0, 10) with 'body' [2, 6) nested; thread 2: 'conv' [4, 14).
  ops = profile.op_events([
      _meta(1, "/host:CPU"), _meta(1, "tf_XLAEigen/1", 1), _meta(1, "tf_XLAEigen/2", 2),
      _event("while", 0, 10, 1), _event("body", 2, 4, 1), _event("conv", 4, 10, 2),
      {"ph": "X", "pid": 1, "tid": 1, "ts": 1, "dur": 1, "name": "end: body", "args": {}},
      _event("other_module_op", 0, 50, 2, module="jit_other")], module="jit_step")
  assert [op.name for op in ops] == ["while", "body", "conv"]
  assert all(op.done is None for op in ops)  # 'end: body' comes before body starts
  timing = profile.attribute(ops)
  assert timing.self_us == pytest.approx([6.0, 4.0, 10.0])  # while: [0,2) + [6,10)
  # [0,2) while alone; [2,4) body alone; [4,6) body+conv; [6,10) while+conv; [10,14) conv.
  assert timing.attributed_us == pytest.approx([2 + 2.0, 2 + 1.0, 1 + 2 + 4.0])
  assert timing.busy_us == pytest.approx(14.0) == pytest.approx(sum(timing.attributed_us))

  summary = profile.summarize(ops, steps=2, wall_s=20e-6)
  assert summary["ops_ms"] == pytest.approx(14e-3 / 2)
  assert summary["self_ms"] == pytest.approx(20e-3 / 2)
  assert summary["pct_of_step_in_ops"] == pytest.approx(70.0)
  assert summary["executions_seen"] == 1
  conv = next(r for r in summary["all_ops"] if r["op"] == "conv")
  assert conv["category"] == profile.CONV_OTHER and conv["count_per_step"] == 0.5
  with pytest.raises(ValueError, match="steps >= 1"):
    profile.summarize(ops, steps=0, wall_s=1.0)


def _mark(name, ts, tid):
  return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": 0.1, "name": name, "args": {}}


def _client_op():
  return profile.OpEvent("wait_op", 0.0, 1.0, (1, 3), "jit_step", "7")


def test_pool_tasks_outside_op_events_go_to_the_open_ops():
  # 'conv' (thread 1) returns at 1 but is marked done at 10: its work runs as pool tasks.
  # 'fusion' (thread 1) runs [4, 6) and is done at once. Pool tasks: thread 1 [0, 12),
  # thread 2 [2, 8); both threads ran ops, so both count as the compute pool.
  events = [_event("conv", 0, 1, 1), _mark("end: conv", 10, 2), _event("fusion", 4, 2, 1),
            _mark("end: fusion", 6, 1), _event("tiny", 8.5, 0.5, 2), _mark("end: tiny", 9, 2),
            _mark("ThreadpoolListener::StartRegion", 0, 1), _mark("ThreadpoolListener::StopRegion", 12, 1),
            _mark("ThreadpoolListener::StartRegion", 2, 2), _mark("ThreadpoolListener::StopRegion", 8, 2)]
  ops = profile.op_events(events)
  assert [(op.name, op.done) for op in ops] == [("conv", 10.0), ("fusion", None), ("tiny", None)]
  names = {(1, 1): "tf_XLAEigen/1", (1, 2): "tf_XLAEigen/2", (1, 3): "tf_XLAPjRtCpuClient/3"}
  assert profile.worker_threads(ops + [_client_op()], names) == {(1, 1), (1, 2)}
  assert profile.worker_threads(ops) == {(1, 1), (1, 2)}  # unnamed: by share of the ops
  regions = profile.pool_regions(events, profile.worker_threads(ops, names))
  assert sorted(regions) == [((1, 1), 0.0, 12.0), ((1, 2), 2.0, 8.0)]
  timing = profile.attribute(ops, regions)
  # [0,1) conv runs; [1,2) one pool thread, conv open; [2,4) two; [4,6) fusion runs on 1,
  # pool on 2 split between the open conv and fusion; [6,8) two pool threads; [8,8.5) one;
  # [8.5,9) tiny runs on 2 and thread 1's pool task is split between conv and tiny;
  # [9,10) one; [10,12) pool work with no op open.
  conv_self = 1 + 1 + 4 + 1 + 4 + 0.5 + 0.25 + 1
  conv_attr = 1 + 1 + 2 + 0.5 + 2 + 0.5 + 0.125 + 1
  assert timing.self_us == pytest.approx([conv_self, 2 + 1, 0.5 + 0.25])
  assert timing.attributed_us == pytest.approx([conv_attr, 1 + 0.5, 0.25 + 0.125])
  assert timing.unassigned_us == pytest.approx(2.0)
  assert timing.busy_us == pytest.approx(12.0)
  assert sum(timing.attributed_us) + timing.unassigned_us == pytest.approx(timing.busy_us)


def test_device_ops_line_is_preferred_over_streams_and_host():
  events = [_meta(1, "/host:CPU"), _meta(2, "/device:GPU:0"), _meta(2, "XLA Ops", 10),
            _meta(2, "Stream #7", 11),
            _event("host_launch", 0, 5, 3, pid=1),
            _event("fusion.1", 0, 3, 10, pid=2), _event("fusion.1", 0, 1, 11, pid=2),
            _event("fusion.1", 1, 2, 11, pid=2)]
  ops = profile.op_events(events)
  assert [(op.name, op.dur, op.thread) for op in ops] == [("fusion.1", 3.0, (2, 10))]
  # Without an 'XLA Ops' line, every device op event is kept (and no host one).
  events = [e for e in events if e.get("args", {}).get("name") != "XLA Ops"
            and e.get("tid") != 10]
  assert sorted(op.dur for op in profile.op_events(events)) == [1.0, 2.0]


@pytest.mark.parametrize("case", [
    dict(x=(2, 9, 9, 3), w=(3, 3, 3, 5), strides=(2, 2), padding=((1, 1), (1, 1)), lhs=(1, 1), rhs=(1, 1)),
    dict(x=(1, 8, 8, 4), w=(4, 4, 4, 6), strides=(1, 1), padding=((2, 2), (2, 2)), lhs=(2, 2), rhs=(1, 1)),
    dict(x=(3, 10, 7, 2), w=(3, 2, 2, 4), strides=(1, 2), padding=((0, 1), (3, 0)), lhs=(1, 1), rhs=(2, 3)),
])
def test_conv_flops_count_only_real_input_taps(case):
  def conv(x, w):
    return lax.conv_general_dilated(x, w, case["strides"], case["padding"], lhs_dilation=case["lhs"],
                                    rhs_dilation=case["rhs"], dimension_numbers=("NHWC", "HWIO", "NHWC"))

  x, w = jnp.ones(case["x"]), jnp.ones(case["w"])
  index = profile.HloIndex(jax.jit(conv).lower(x, w).compile().as_text())
  [inst] = [i for i in index.instructions.values() if i.opcode == "convolution"]
  # With all-ones operands every output is its number of real (tap, input channel) pairs.
  expected = 2.0 * float(np.asarray(conv(x, w), np.float64).sum())
  assert profile.conv_flops(inst, index.shapes) == expected
  assert index.info(inst.name).category == profile.CONV_FWD
  assert index.info(inst.name).flops == expected


def test_hlo_labels_of_a_train_step():
  def loss(w, x):
    y = lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.square(y))

  def step(params, opt_state, x):
    g = jax.grad(loss)(params, x)
    mu = 0.9 * opt_state + 0.1 * g
    return params - 1e-3 * mu, mu

  w = jnp.ones((3, 3, 4, 8))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 4)), jnp.float32)
  # Entry parameters are named after the arguments: 'opt_state' marks the optimiser's state.
  index = profile.HloIndex(jax.jit(step).lower(w, w, x).compile().as_text())
  categories = {index.info(name).category for name, inst in index.instructions.items()
                if inst.computation == index.entry and inst.opcode not in ("parameter", "constant", "tuple")}
  assert profile.CONV_FWD in categories
  assert profile.CONV_BWD_FILTER in categories  # the kernel gradient: shaped like the kernel
  assert profile.OPTIMIZER in categories  # the update reads opt_state
  assert index.module and index.module.startswith("jit_step")


def test_torch_categories_follow_the_op_and_its_ancestors():
  cat = profile._torch_category  # noqa: SLF001
  assert cat(["aten::add_", "Optimizer.step#Adam.step"]) == profile.OPTIMIZER
  assert cat(["aten::copy_", "aten::convolution_backward",
              "autograd::engine::evaluate_function: ConvolutionBackward0"]) == "conv bwd (input+filter)"
  assert cat(["aten::mkldnn_convolution", "aten::_convolution", "aten::conv2d"]) == profile.CONV_FWD
  assert cat(["aten::native_batch_norm", "aten::batch_norm"]) == profile.REDUCE
  assert cat(["aten::randint"]) == profile.RNG
  assert cat(["aten::cat"]) == profile.COPY
  assert cat(["aten::leaky_relu"]) == profile.ELEMENTWISE


def test_profile_of_a_tiny_unet_train_step(tmp_path):
  record, program = profile.build("unet", batch_size=2, image_size=16, compute_dtype="float32",
                                  width_scale=0.0625, num_keys=8)
  assert record["model_config"]["features"] == 4
  steps = 2
  summary, peer = profile.profile_program(program, steps=steps, warmup=1, logdir=str(tmp_path),
                                          untraced=False, top_k=5)
  assert peer is None
  trace = profile.find_trace(str(tmp_path))
  assert trace == summary["trace"] and trace.endswith("perfetto_trace.json.gz")
  run_dir = os.path.dirname(trace)
  saved = json.load(open(os.path.join(run_dir, "profile_summary.json")))
  assert saved["ops_ms"] == pytest.approx(summary["ops_ms"])
  assert os.path.getsize(os.path.join(run_dir, "program.hlo.txt")) > 0

  assert summary["executions_seen"] == steps  # one run_id per traced step: only our module
  assert len(summary["step_ms"]) == steps
  assert 0 < summary["ops_ms"] <= summary["wall_ms_per_step"]
  assert summary["ops_ms"] <= summary["self_ms"]
  assert sum(c["ms"] for c in summary["categories"]) == pytest.approx(summary["ops_ms"], rel=1e-9)
  assert sum(r["ms"] for r in summary["all_ops"]) == pytest.approx(summary["ops_ms"], rel=1e-9)
  assert len(summary["top"]) == 5 and summary["top"][0]["ms"] >= summary["top"][-1]["ms"]
  assert not [r["op"] for r in summary["all_ops"] if r["kind"] == "?"]  # every op found in the HLO

  by_cat = {c["category"]: c for c in summary["categories"]}
  for category in (profile.CONV_FWD, profile.CONV_BWD_INPUT, profile.CONV_BWD_FILTER):
    assert by_cat[category]["ms"] > 0 and by_cat[category]["count_per_step"] >= 1, category
  assert by_cat[profile.OPTIMIZER]["count_per_step"] >= 1  # Adam reads opt_state
  # The convolutions' FLOPs by formula are most of XLA's count for the whole step.
  assert 0.5 * summary["xla_flops_per_step"] < summary["conv_flops_per_step"] <= summary["xla_flops_per_step"]
  text = profile.format_summary(summary)
  assert "By category:" in text and profile.CONV_BWD_FILTER in text
  again = profile.summarize_run(run_dir)  # from the files alone
  assert again["ops_ms"] == pytest.approx(summary["ops_ms"])
  assert [c["category"] for c in again["categories"]] == [c["category"] for c in summary["categories"]]


def test_command_line_rejects_bad_counts_and_unknown_models():
  with pytest.raises(SystemExit):
    profile.parse_args(["--steps=0"])
  with pytest.raises(ValueError, match="unknown --model"):
    profile.build("no_such_model", batch_size=1, image_size=16, compute_dtype="float32")
  with pytest.raises(ValueError, match="no PyTorch peer"):
    profile.build("unet", batch_size=1, image_size=16, compute_dtype="float32", peer_settings=True)
