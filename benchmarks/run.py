r"""Train-step throughput of every jaxpaint model, through the driver's own Task and jit.

  python -m benchmarks.run --output=/tmp/bench.json
  python -m benchmarks.run --models=pix2pix --batch_sizes=1,64 --compute_dtypes=float32,bfloat16
  python -m benchmarks.run --models=unet,pconv --image_size=64 --width_scale=0.5 --steps=5

For each model (``--models``, see :mod:`benchmarks.registry`), compute dtype and batch size:
compile time, then steps/s and images/s (median, min, max of ``--repeats`` timings of
``--steps`` steps after ``--warmup`` steps), FLOPs per step, memory and MFU (needs a known
device or ``--peak_tflops``). Prints a table and writes everything to ``--output`` (JSON).
A model whose config or task is missing, or that cannot be built at the asked settings, is
listed as "not available: <reason>".

``--input_pipeline`` adds the input-pipeline rate of every data source and its ratio to the
measured step rates (:mod:`benchmarks.input_pipeline`; alone: ``python -m
benchmarks.input_pipeline``); ``--torch_peers`` adds the PyTorch comparisons
(:mod:`benchmarks.torch_peers`; alone: ``python -m benchmarks.torch_peers``). ``--models=``
(empty) skips the per-model table.
"""

import gc
import json
import os
import sys
import traceback
from typing import Any, Optional, Sequence

from absl import app, flags

from benchmarks import harness, input_pipeline, registry, torch_peers

FLAGS = flags.FLAGS
flags.DEFINE_list("models", [s.name for s in registry.SPECS],
                  f"Programs to time, from: {', '.join(s.name for s in registry.SPECS)}.")
flags.DEFINE_list("batch_sizes", [], "Global batch sizes, e.g. 1,64; empty = each config's own.")
flags.DEFINE_integer("image_size", None, "Square image side; default: each config's own. Depth "
                     "keys (num_downs, num_levels, depth) are lowered when the size needs it.")
flags.DEFINE_list("compute_dtypes", ["float32"], "float32 and/or bfloat16 (bf16 compute, "
                  "float32 master weights).")
flags.DEFINE_float("width_scale", 1.0, "Multiplies every integer config.model.*features* width.")
flags.DEFINE_multi_string("set", [], "Extra override key.path=value (repeatable), applied to "
                          "each config that has the key, e.g. --set=model.num_downs=6.")
flags.DEFINE_integer("steps", 10, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Timed repeats; the median is reported.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_bool("interleave", False, "Per dtype and batch size, compile all models first, then "
                  "time them round-robin (steadier ratios on a machine with drifting load; needs "
                  "memory for all of them at once).")
flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of one device for MFU; default: the "
                   "dense bf16 peak of a known device kind, else no MFU.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_bool("input_pipeline", False, "Also time the input pipeline of each data source "
                  "at the batch and image sizes of the timed steps (benchmarks/input_pipeline.py).")
flags.DEFINE_string("pipeline_config", "unet_celeba.py", "Config whose data settings (workers, "
                    "flips) the input-pipeline benchmark uses, per source.")
flags.DEFINE_list("pipeline_sources", ["samples", "folder", "mnist", "cifar10", "celeb_a"],
                  "Data sources for --input_pipeline.")
flags.DEFINE_integer("pipeline_batches", 20, "Timed batches per repeat for --input_pipeline.")
flags.DEFINE_integer("worker_count", None, "grain worker processes for --input_pipeline; "
                     "default: the config's data.worker_count.")
flags.DEFINE_string("tfds_data_dir", "", "TFDS data_dir for --input_pipeline ('' = TFDS default).")
flags.DEFINE_bool("torch_peers", False, "Also time the PyTorch peers (benchmarks/torch_peers.py; "
                  "needs torch).")
flags.DEFINE_list("torch_models", ["pix2pix", "pconv"], "Models compared with PyTorch peers.")
flags.DEFINE_bool("torch_compile", True, "Also time the peers under torch.compile.")


def _short(error: BaseException) -> str:
  text = f"{type(error).__name__}: {error}".strip().splitlines()
  return text[0][:300] if text else type(error).__name__


def _not_available(record: dict[str, Any], reason: str) -> dict[str, Any]:
  record.update(status="not available", reason=reason)
  return record


def prepare(spec: registry.Spec, batch_size: Optional[int], compute_dtype: str, *,
            image_size: Optional[int] = None, width_scale: float = 1.0,
            sets: Sequence[tuple[str, Any]] = (), num_keys: int = 16
            ) -> tuple[dict[str, Any], Optional[harness.Program]]:
  """Builds one program (not yet compiled); never raises for a model that cannot be built.

  Returns (record, program): the record describes the settings and, when the program is
  None, has ``status`` 'not available' (config/task missing or not buildable at these
  settings) or 'failed' (built, but its state or batch could not be made), with ``reason``.
  """
  from jaxpaint import parallel  # noqa: PLC0415
  record: dict[str, Any] = {"model": spec.name, "description": spec.description,
                            "config": f"configs/{spec.config_file}", "stage": spec.stage,
                            "program": spec.program, "compute_dtype": compute_dtype}
  try:
    raw = harness.load_config(spec.config_file)
  except FileNotFoundError:
    return _not_available(record, f"configs/{spec.config_file} does not exist"), None
  except Exception as e:  # noqa: BLE001 (a config another helper is still writing)
    return _not_available(record, f"configs/{spec.config_file} fails to load: {_short(e)}"), None

  settings = harness.Settings(batch_size=batch_size, image_size=image_size,
                              compute_dtype=compute_dtype, width_scale=width_scale,
                              sets=tuple(spec.sets) + tuple(sets))
  earlier = []
  try:
    if spec.stage:
      stages = tuple(raw.get("stages") or ())
      if spec.stage not in stages:
        return _not_available(record, f"configs/{spec.config_file} has no stage {spec.stage!r} "
                              f"(config.stages={stages})"), None
      for name in stages[:stages.index(spec.stage)]:
        earlier.append((name, harness.apply_settings(harness.stage_config(raw, name), settings)[0]))
      raw = harness.stage_config(raw, spec.stage)
    config, changes = harness.apply_settings(raw, settings)
  except Exception as e:  # noqa: BLE001
    return _not_available(record, f"cannot apply the settings: {_short(e)}"), None
  missing = [key for key, _ in spec.sets if not harness.has_key(config, key)]
  if missing:
    return _not_available(record, f"configs/{spec.config_file} has no {missing} to make this variant"), None
  record.update(batch_size=config.batch_size, image_size=config.image_size, changes=changes,
                model_config=config.model.to_dict())

  try:
    parallel.validate_batch_size(config.batch_size)
    mesh = parallel.create_mesh()
    task = harness.build_task(config, mesh, earlier)
  except ModuleNotFoundError as e:
    return _not_available(record, f"{e.name} does not exist yet (task for "
                          f"config.model.name={config.model.get('name')!r})"), None
  except Exception as e:  # noqa: BLE001
    return _not_available(record, f"task does not build at these settings: {_short(e)}"), None

  try:
    make = harness.train_program if spec.program == "train" else harness.inpaint_program
    return record, make(task, config, mesh, num_keys=num_keys)
  except Exception as e:  # noqa: BLE001
    record.update(status="failed", reason=_short(e), traceback=traceback.format_exc()[-3000:])
    return record, None


def mark_failed(record: dict[str, Any], error: BaseException) -> dict[str, Any]:
  record.update(status="failed", reason=_short(error), traceback=traceback.format_exc()[-3000:])
  return record


def benchmark(spec: registry.Spec, batch_size: Optional[int], compute_dtype: str, *,
              image_size: Optional[int] = None, width_scale: float = 1.0,
              sets: Sequence[tuple[str, Any]] = (), steps: int = 10, repeats: int = 3,
              warmup: int = 2, peak_tflops: Optional[float] = None) -> dict[str, Any]:
  """Builds and times one program (:func:`prepare`, :func:`harness.measure`); never raises
  for a model that cannot be built or run: the record's ``status`` says what happened."""
  record, program = prepare(spec, batch_size, compute_dtype, image_size=image_size,
                            width_scale=width_scale, sets=sets, num_keys=steps * repeats + warmup + 1)
  if program is None:
    return record
  try:
    record.update(harness.measure(program, steps=steps, repeats=repeats, warmup=warmup,
                                  peak=peak_tflops), status="ok")
  except Exception as e:  # noqa: BLE001
    mark_failed(record, e)
  finally:
    del program
    gc.collect()
  return record


def benchmark_interleaved(specs: Sequence[registry.Spec], batch_size: Optional[int], compute_dtype: str,
                          *, steps: int = 10, repeats: int = 3, warmup: int = 2,
                          peak_tflops: Optional[float] = None, **kwargs) -> list[dict[str, Any]]:
  """Like :func:`benchmark` for several models at one setting, timed round-robin
  (:func:`harness.measure_interleaved`): steadier ratios on a machine with drifting load."""
  records, programs = [], {}
  for spec in specs:
    record, program = prepare(spec, batch_size, compute_dtype, num_keys=steps * repeats + warmup + 1,
                              **kwargs)
    records.append(record)
    if program is not None:
      programs[spec.name] = program
  try:
    measured = harness.measure_interleaved(programs, steps=steps, repeats=repeats, warmup=warmup,
                                           peak=peak_tflops)
    for record in records:
      if record["model"] in measured:
        record.update(measured[record["model"]], status="ok")
  except Exception as e:  # noqa: BLE001
    for record in records:
      if record["model"] in programs:
        mark_failed(record, e)
  finally:
    programs.clear()
    gc.collect()
  return records


def run_all(model_names: Sequence[str], batch_sizes: Sequence[Optional[int]],
            compute_dtypes: Sequence[str], *, interleave: bool = False, log=print,
            **kwargs) -> list[dict[str, Any]]:
  """:func:`benchmark` for every model x compute dtype x batch size, logging one line each.

  ``interleave``: per compute dtype and batch size, all models are compiled first and then
  timed round-robin (:func:`benchmark_interleaved`).
  """
  unknown = [m for m in model_names if m not in registry.BY_NAME]
  if unknown:
    raise ValueError(f"unknown --models {unknown}; choose from {sorted(registry.BY_NAME)}.")
  for dtype in compute_dtypes:
    if dtype not in ("float32", "bfloat16"):
      raise ValueError(f"--compute_dtypes entry {dtype!r}; use float32 and/or bfloat16.")
  results = []
  if interleave:
    for dtype in compute_dtypes:
      for batch in batch_sizes:
        for record in benchmark_interleaved([registry.BY_NAME[n] for n in model_names], batch, dtype,
                                            **kwargs):
          results.append(record)
          log(one_line(record))
    return results
  for name in model_names:
    for dtype in compute_dtypes:
      for batch in batch_sizes:
        record = benchmark(registry.BY_NAME[name], batch, dtype, **kwargs)
        results.append(record)
        log(one_line(record))
  return results


def one_line(r: dict[str, Any]) -> str:
  head = f"{r['model']} [{r['compute_dtype']}, batch {r.get('batch_size', '?')}, {r.get('image_size', '?')}px]"
  if r["status"] != "ok":
    return f"{head}: {r['status']}: {r['reason']}"
  return (f"{head}: compile {r['compile_s']:.1f} s, {r['steps_per_s']['median']:.3f} steps/s, "
          f"{r['images_per_s']['median']:.2f} images/s, {harness.human_flops(r['flops_per_step'])}/step")


def results_table(results: Sequence[dict[str, Any]]) -> str:
  header = ("model", "dtype", "batch", "px", "compile s", "steps/s median (min-max)", "images/s",
            "ms/step", "FLOP/step", "TFLOP/s", "MFU", "arg+out+temp", "less donated", "params")
  rows = []
  for r in results:
    if r["status"] != "ok":
      continue
    s = r["steps_per_s"]
    mem = r.get("memory") or {}
    lb = ">=" if r.get("flops_lower_bound") else ""
    rows.append((
        r["model"], "bf16" if r["compute_dtype"] == "bfloat16" else "fp32", r["batch_size"],
        r["image_size"], f"{r['compile_s']:.1f}",
        f"{s['median']:.3g} ({s['min']:.3g}-{s['max']:.3g})", f"{r['images_per_s']['median']:.3g}",
        f"{r['step_ms_median']:.1f}", lb + harness.human_flops(r["flops_per_step"]),
        lb + f"{r['achieved_tflops']:.3f}" if r["achieved_tflops"] else "-",
        lb + f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-", harness.human_bytes(mem.get("total_bytes")),
        harness.human_bytes(mem.get("total_minus_alias_bytes")),
        f"{r['num_params'] / 1e6:.2f}M"))
  table = harness.format_table(rows, header)
  if any(r.get("flops_lower_bound") for r in results if r["status"] == "ok"):
    table += ("\n\n>= : a while loop of the program runs convolutions (lax.scan: the latent search) and "
              "XLA's cost analysis counts a loop body once, so FLOPs, TFLOP/s and MFU are lower bounds.")
  skipped = [f"- {r['model']} [{r['compute_dtype']}, batch {r.get('batch_size', '?')}]: "
             f"{r['status']}: {r['reason']}" for r in results if r["status"] != "ok"]
  return table + ("\n\n" + "\n".join(skipped) if skipped else "")


def _ok(results, model):
  return {(r["compute_dtype"], r["batch_size"], r["image_size"]): r
          for r in results if r["model"] == model and r["status"] == "ok"}


def comparisons(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """Issue 3: PConv U-Net vs its plain-conv twin and vs the naive mask update; issue 4: Pix2Pix."""
  pconv, plain, naive = _ok(results, "pconv"), _ok(results, "pconv_plain"), _ok(results, "pconv_naive")
  issue3 = []
  for key, r in pconv.items():
    entry = {"compute_dtype": key[0], "batch_size": key[1], "image_size": key[2],
             "pconv_ms": r["step_ms_median"]}
    if key in plain:
      entry["plain_ms"] = plain[key]["step_ms_median"]
      entry["pconv_over_plain_time"] = r["step_ms_median"] / plain[key]["step_ms_median"]
    if key in naive:
      entry["naive_ms"] = naive[key]["step_ms_median"]
      entry["naive_over_pconv_time"] = naive[key]["step_ms_median"] / r["step_ms_median"]
    issue3.append(entry)
  issue4 = [{"compute_dtype": k[0], "batch_size": k[1], "image_size": k[2],
             "images_per_s": r["images_per_s"]["median"], "mfu": r["mfu"],
             "achieved_tflops": r["achieved_tflops"]} for k, r in _ok(results, "pix2pix").items()]
  return {"issue3_pconv": issue3, "issue4_pix2pix": issue4}


def comparisons_text(comp: dict[str, list[dict[str, Any]]]) -> str:
  lines = []
  if comp["issue3_pconv"]:
    lines.append("Issue 3: PConv U-Net step time vs the plain-conv twin (target <= 1.15) and the "
                 "naive full mask convolution vs the grouped box sums:")
    for e in comp["issue3_pconv"]:
      parts = [f"  {e['compute_dtype']} batch {e['batch_size']} {e['image_size']}px: pconv {e['pconv_ms']:.1f} ms"]
      if "plain_ms" in e:
        parts.append(f"plain {e['plain_ms']:.1f} ms -> pconv/plain = {e['pconv_over_plain_time']:.3f}")
      if "naive_ms" in e:
        parts.append(f"naive {e['naive_ms']:.1f} ms -> naive/pconv = {e['naive_over_pconv_time']:.3f}")
      lines.append("; ".join(parts))
  if comp["issue4_pix2pix"]:
    lines.append("Issue 4: Pix2Pix G+D step:")
    for e in comp["issue4_pix2pix"]:
      mfu = f", MFU {100 * e['mfu']:.1f}%" if e["mfu"] else ""
      lines.append(f"  {e['compute_dtype']} batch {e['batch_size']} {e['image_size']}px: "
                   f"{e['images_per_s']:.3g} images/s{mfu}")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.input_pipeline:
    input_pipeline.require_data_pipeline()  # before minutes of step timings
  if FLAGS.torch_peers:
    # JAX and PyTorch share the accelerator in this process: no up-front 75% grab by XLA.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  env = harness.environment()
  peak = harness.peak_tflops(env["device_kind"], FLAGS.peak_tflops)
  batch_sizes = [int(b) for b in FLAGS.batch_sizes] or [None]
  print(f"Device: {env['device_count']} x {env['device_kind']} ({env['platform']}); jax {env['jax']}, "
        f"flax {env['flax']}; commit {env['git_commit']}; peak {peak or 'unknown'} TFLOP/s per device "
        f"(bf16 dense; MFU {'on' if peak else 'omitted'})", flush=True)
  kwargs = dict(image_size=FLAGS.image_size, width_scale=FLAGS.width_scale,
                sets=harness.parse_sets(FLAGS.set), steps=FLAGS.steps, repeats=FLAGS.repeats,
                warmup=FLAGS.warmup, peak_tflops=peak)
  log = lambda line: print(line, flush=True)
  results = run_all(FLAGS.models, batch_sizes, FLAGS.compute_dtypes, interleave=FLAGS.interleave,
                    log=log, **kwargs)
  comp = comparisons(results)
  out: dict[str, Any] = {
      "environment": env,
      "flags": {name: FLAGS[name].value for name in _FLAG_NAMES},
      "memory_note": harness.memory_sizes.__doc__.strip(),
      "flops_note": "XLA cost analysis of the compiled program, per device (multiply-add = 2 FLOPs); "
                    "MFU = FLOPs/step * steps/s / dense bf16 peak of one device.",
      "results": results, "comparisons": comp}
  if results:
    print("\n" + results_table(results))
  text = comparisons_text(comp)
  if text:
    print("\n" + text)
  if FLAGS.input_pipeline:
    shapes = sorted({(r["batch_size"], r["image_size"]) for r in results
                     if r["status"] == "ok" and r["program"] == "train"})
    if not shapes:
      default = harness.load_config(FLAGS.pipeline_config)
      shapes = [(b or default.batch_size, FLAGS.image_size or default.image_size) for b in batch_sizes]
    out["input_pipeline"] = input_pipeline.run(
        FLAGS.pipeline_config, shapes, sources=FLAGS.pipeline_sources, worker_count=FLAGS.worker_count,
        tfds_data_dir=FLAGS.tfds_data_dir, batches=FLAGS.pipeline_batches, repeats=FLAGS.repeats,
        step_results=results, log=log)
    print("\n" + input_pipeline.table(out["input_pipeline"]))
  if FLAGS.torch_peers:
    try:
      out["torch_peers"] = torch_peers.compare(
          FLAGS.torch_models, batch_sizes, FLAGS.compute_dtypes, compile_models=FLAGS.torch_compile,
          log=log, **{k: v for k, v in kwargs.items() if k != "sets"})
      print("\n" + torch_peers.table(out["torch_peers"]))
    except ImportError as e:
      out["torch_peers"] = {"status": "not available", "reason": str(e)}
      print(f"\ntorch peers: not available: {e}")
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(out, f, indent=2, default=str)
    print(f"\nWrote {FLAGS.output}")
  if any(r["status"] == "failed" for r in results):
    sys.exit(1)


_FLAG_NAMES = ("models", "batch_sizes", "image_size", "compute_dtypes", "width_scale", "set", "steps",
               "repeats", "warmup", "interleave", "peak_tflops", "output", "input_pipeline", "pipeline_config",
               "pipeline_sources", "pipeline_batches", "worker_count", "tfds_data_dir", "torch_peers",
               "torch_models", "torch_compile")


def cli(mode: str = "steps") -> None:
  """Entry point; ``mode`` 'input_pipeline' or 'torch_peers' changes the defaults to that part."""
  if mode == "input_pipeline":
    FLAGS.set_default("models", ["unet"])  # the step the pipeline must outrun
    FLAGS.set_default("input_pipeline", True)
  elif mode == "torch_peers":
    FLAGS.set_default("models", [])
    FLAGS.set_default("torch_peers", True)
  app.run(main)


if __name__ == "__main__":
  cli()
