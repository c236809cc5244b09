r"""Input-pipeline throughput of every data source, next to the measured train-step rate.

  python -m benchmarks.input_pipeline --image_size=64 --batch_sizes=16
  python -m benchmarks.run --input_pipeline --models=unet,pix2pix --batch_sizes=16

Each source (``samples``; ``folder`` on scikit-image photos written as JPEGs to a temporary
folder; the TFDS sources when prepared, else a "not prepared" line) is read through the
driver's own :func:`jaxpaint.data.create_train_iterator` (shuffle, flip, batch, threads or
``--worker_count`` processes) at a batch size and image size; after warm-up batches,
``--pipeline_batches`` batches are timed ``--repeats`` times (median images/s).

Masks are not part of the host pipeline: the train step draws them on device inside its jit
(so the step rates include them). Their cost is reported alone too: ``config.mask``'s
generator jitted on the device, masks/s.

The ratio column is pipeline images/s over the train step's images/s for each model timed at
the same batch and image size: the pipeline keeps the device busy while it is > 1.
"""

import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from benchmarks import harness

SOURCES = ("samples", "folder", "mnist", "cifar10", "celeb_a")
# skimage photos that load offline (shared/notes/reference.md); each gives several crops.
_FOLDER_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina", "brick", "grass", "gravel", "camera", "moon")


def write_photo_folder(root: str, crops_per_photo: int = 8, seed: int = 0) -> int:
  """Writes random crops (>= half the short side) of skimage photos as JPEGs; returns the count."""
  import skimage.data  # noqa: PLC0415
  from PIL import Image  # noqa: PLC0415
  rng = np.random.default_rng(seed)
  count = 0
  for name in _FOLDER_PHOTOS:
    photo = np.asarray(getattr(skimage.data, name)())
    if photo.ndim == 2:
      photo = np.repeat(photo[..., None], 3, axis=-1)
    photo = photo[..., :3].astype(np.uint8)
    h, w = photo.shape[:2]
    for i in range(crops_per_photo):
      side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
      top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
      Image.fromarray(photo[top:top + side, left:left + side]).save(
          os.path.join(root, f"{name}_{i}.jpg"), quality=90)
      count += 1
  return count


def _source_config(base, source: str, batch_size: int, image_size: int, worker_count: Optional[int],
                   folder: str, tfds_data_dir: str):
  # Masks (timed on their own) scale with the image as in benchmarks.run.
  config, _ = harness.apply_settings(base, harness.Settings(
      batch_size=batch_size, image_size=image_size, compute_dtype=base.get("compute_dtype", "float32")))
  config.data.name = source
  config.data.num_train_images = 0
  if worker_count is not None:
    config.data.worker_count = worker_count
  if source == "folder":
    config.data.path, config.data.num_eval_images = folder, 8
  if source in ("mnist", "cifar10", "celeb_a"):
    config.data.data_dir = tfds_data_dir
  return config


def require_data_pipeline() -> None:
  """Raises ImportError saying what to install when :mod:`jaxpaint.data` (grain) cannot load."""
  try:
    from jaxpaint import data  # noqa: PLC0415,F401
  except ImportError as e:
    raise ImportError(f"--input_pipeline needs jaxpaint.data, which needs grain ({e}); "
                      "pip install grain, or run without --input_pipeline.") from e


def time_pipeline(config, *, batches: int, repeats: int, warmup: int = 3) -> dict[str, Any]:
  """images/s of ``create_train_iterator(config)`` (median, min, max over repeats)."""
  from jaxpaint import data  # noqa: PLC0415 (grain, and tfds for TFDS sources)
  start = time.perf_counter()
  iterator = data.create_train_iterator(config)
  for _ in range(warmup):
    batch = next(iterator)
  startup_s = time.perf_counter() - start
  rates = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(batches):
      batch = next(iterator)
    rates.append(batches * config.batch_size / (time.perf_counter() - t0))
  image = batch["image"]
  return {"images_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
          "startup_s": startup_s, "batch_shape": list(image.shape), "dtype": str(image.dtype)}


def time_masks(config, *, calls: int = 20) -> dict[str, Any]:
  """masks/s of ``config.mask``'s generator jitted on the default device, as the step draws them."""
  import jax  # noqa: PLC0415
  from jaxpaint import masks as mask_lib  # noqa: PLC0415
  size = config.image_size
  fn = jax.jit(mask_lib.make_mask_fn(config.mask, size, size), static_argnums=1)
  key = jax.random.key(0)
  jax.block_until_ready(fn(key, config.batch_size))
  t0 = time.perf_counter()
  for i in range(calls):
    out = fn(jax.random.fold_in(key, i), config.batch_size)
  jax.block_until_ready(out)
  return {"mask_kind": config.mask.kind,
          "masks_per_s": calls * config.batch_size / (time.perf_counter() - t0)}


def run(config_file: str, shapes: Sequence[tuple[int, int]], *, sources: Sequence[str] = SOURCES,
        worker_count: Optional[int] = None, tfds_data_dir: str = "", batches: int = 20,
        repeats: int = 3, step_results: Sequence[dict[str, Any]] = (),
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Times every source at every (batch size, image size) in ``shapes``.

  Returns {"config": ..., "results": [per source and shape], "masks": [...]} where each
  result has ``status`` 'ok', 'not prepared' or 'failed', and for 'ok' the ratios to
  every train-step result in ``step_results`` at the same batch and image size.
  """
  require_data_pipeline()
  from jaxpaint.data import sources as sources_lib  # noqa: PLC0415
  unknown = sorted(set(sources) - set(SOURCES))
  if unknown:
    raise ValueError(f"unknown pipeline sources {unknown}; choose from {SOURCES}.")
  base = harness.load_config(config_file)
  folder = tempfile.mkdtemp(prefix="jaxpaint_bench_folder_")
  results, masks = [], []
  try:
    if "folder" in sources:
      log(f"Wrote {write_photo_folder(folder)} JPEG crops of skimage photos to {folder}.")
    for batch_size, image_size in shapes:
      for source in sources:
        config = _source_config(base, source, batch_size, image_size, worker_count, folder, tfds_data_dir)
        record = {"source": source, "batch_size": batch_size, "image_size": image_size,
                  "worker_count": config.data.worker_count}
        try:
          if source in sources_lib.TFDS_NAMES:
            sources_lib.check_tfds_prepared(source, tfds_data_dir)
          record.update(time_pipeline(config, batches=batches, repeats=repeats), status="ok")
        except sources_lib.DatasetNotPreparedError as e:
          record.update(status="not prepared", reason=str(e).splitlines()[0])
        except Exception as e:  # noqa: BLE001
          record.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
        if record["status"] == "ok":
          rate = record["images_per_s"]["median"]
          record["ratio_to_step"] = {
              f"{r['model']}/{r['compute_dtype']}": rate / r["images_per_s"]["median"]
              for r in step_results
              if r.get("status") == "ok" and r.get("program") == "train"
              and r["batch_size"] == batch_size and r["image_size"] == image_size}
          log(f"pipeline {source} [batch {batch_size}, {image_size}px, {record['worker_count']} workers]: "
              f"{rate:.1f} images/s; ratio to step: "
              + (", ".join(f"{k} {v:.2f}" for k, v in record["ratio_to_step"].items()) or "no step timed"))
        else:
          log(f"pipeline {source} [batch {batch_size}, {image_size}px]: {record['status']}: {record['reason']}")
        results.append(record)
      mask_config = _source_config(base, "samples", batch_size, image_size, None, folder, "")
      masks.append({"batch_size": batch_size, "image_size": image_size, **time_masks(mask_config)})
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return {"config": config_file, "results": results, "masks": masks,
          "note": "Host pipeline only (uint8 batches, flips); masks are drawn on device inside the "
                  "train step (timed alone under 'masks'). ratio_to_step = pipeline images/s / "
                  "train-step images/s at the same batch and image size."}


def table(out: dict[str, Any]) -> str:
  rows = []
  for r in out["results"]:
    if r["status"] == "ok":
      s = r["images_per_s"]
      ratios = ", ".join(f"{k.replace('/float32', '').replace('/bfloat16', ' bf16')} {v:.3g}x"
                         for k, v in r["ratio_to_step"].items()) or "-"
      rows.append((r["source"], r["batch_size"], r["image_size"], r["worker_count"],
                   f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})", ratios))
    else:
      rows.append((r["source"], r["batch_size"], r["image_size"], r.get("worker_count", "-"),
                   r["status"], r["reason"].split(";")[0][:70]))
  text = harness.format_table(rows, ("source", "batch", "px", "workers", "images/s median (min-max)",
                                     "pipeline / step"))
  masks = "\n".join(f"- on-device {m['mask_kind']} masks [batch {m['batch_size']}, {m['image_size']}px]: "
                    f"{m['masks_per_s']:.0f} masks/s" for m in out["masks"])
  return f"{text}\n\n{masks}" if masks else text


if __name__ == "__main__":
  from benchmarks import run as run_lib  # noqa: PLC0415
  run_lib.cli(mode="input_pipeline")
