"""grain pipelines: an endless, sharded, checkpointable train iterator and eval batches.

Train pipeline (``grain.MapDataset``), per process::

  source -> [:num_train_images] -> this process's contiguous shard (the MapDataset form
  of ShardByJaxProcess(drop_remainder=True)) -> seed -> shuffle -> repeat forever
  (reshuffled each epoch) -> random horizontal flip -> {'image': x} -> batch
  (per_host_batch, drop_remainder) -> to_iter_dataset (threads) [-> mp_prefetch].

The returned iterator is grain's own ``DatasetIterator``, so ``get_state``/``set_state``
and ``grain.checkpoint.CheckpointSave/CheckpointRestore`` (orbax) resume on exactly the
next batch. Images stay uint8; train steps convert them on device.
"""

import os
from typing import Any

from absl import flags
from absl import logging
import grain
import ml_collections
import numpy as np

from jaxpaint.data import sources

NAMES = ('samples', 'mnist', 'cifar10', 'celeb_a', 'folder')
Batch = dict[str, np.ndarray]


def default_config() -> ml_collections.ConfigDict:
  """Defaults of ``config.data`` (the top level also needs batch_size, image_size, seed)."""
  return ml_collections.ConfigDict(dict(
      name='samples',  # one of NAMES
      data_dir='',  # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets)
      path='',  # folder of images, for name='folder'
      train_split='train',  # TFDS split strings; unused by 'samples' and 'folder'
      eval_split='test',
      num_eval_images=64,  # first N of the eval split (folder: N held-out files)
      num_train_images=0,  # 0 = all; else the first N of the train split
      worker_count=0,  # grain worker processes; 0 = decode in this process (threads)
      random_flip=True,  # random horizontal flips of train images
  ))


def _data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.data over the defaults, so an older config missing a key still works."""
  defaults = default_config()
  data = config.get('data', None) or {}
  unknown = sorted(set(data.keys()) - set(defaults.keys()))
  if unknown:
    logging.warning('Ignoring unknown config.data keys %s (known: %s).', unknown,
                    sorted(defaults.keys()))
  # A plain dict first: the values' types are checked by validate_config, not here.
  return ml_collections.ConfigDict(
      {key: data[key] if key in data else value for key, value in defaults.items()})


def num_channels(config: ml_collections.ConfigDict) -> int:
  """Image channels of the configured dataset (1 for mnist, else 3), without loading it."""
  return 1 if _data_config(config).name == 'mnist' else 3


def _check_int(value: Any, what: str, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f'{what} must be an integer >= {minimum}, got {value!r}.')


def validate_config(config: ml_collections.ConfigDict,
                    process_count: int | None = None) -> None:
  """Fast checks of the data settings, before anything heavy.

  Checks names and numbers, that a folder exists and holds image files (by extension;
  nothing is decoded) and that a TFDS dataset is prepared in ``data_dir`` (local files
  only). ``process_count`` (optional, so the driver may call this before JAX is
  initialised) adds the check that ``batch_size`` splits evenly over processes.

  Raises:
    ValueError (sources.DatasetNotPreparedError for TFDS) saying what to change.
  """
  data = _data_config(config)
  if data.name not in NAMES:
    raise ValueError(f'config.data.name={data.name!r} is not one of {NAMES}.')
  _check_int(config.get('image_size', None), 'config.image_size', 1)
  _check_int(config.get('batch_size', None), 'config.batch_size', 1)
  _check_int(config.get('seed', 0), 'config.seed', 0)
  _check_int(data.num_eval_images, 'config.data.num_eval_images', 0)
  _check_int(data.num_train_images, 'config.data.num_train_images', 0)
  _check_int(data.worker_count, 'config.data.worker_count', 0)
  if not isinstance(data.random_flip, bool):
    raise ValueError(f'config.data.random_flip must be a bool, got {data.random_flip!r}.')
  if process_count is not None:
    _check_int(process_count, 'process_count', 1)
    if config.batch_size % process_count:
      raise ValueError(
          f'config.batch_size={config.batch_size} (global) must be divisible by the '
          f'number of processes ({process_count}).')
  if data.name == 'folder':
    if not data.path:
      raise ValueError("config.data.path is empty; set it to a folder of images for "
                       "config.data.name='folder'.")
    if not os.path.isdir(data.path):
      raise ValueError(f'Image folder {data.path!r} (config.data.path) does not exist or '
                       'is not a directory.')
    if not sources.list_image_files(data.path):
      raise ValueError(
          f'No image files in {data.path!r} (config.data.path); looked recursively '
          f'for {"/".join(sources.IMAGE_EXTENSIONS)} (case-insensitive).')
  elif data.name in sources.TFDS_NAMES:
    sources.check_tfds_prepared(data.name, data.data_dir)


def create_source(config: ml_collections.ConfigDict, train: bool):
  """The random-access source of the train or eval images (uint8 [S, S, C] records).

  Folder sources expose ``num_skipped`` / ``unreadable`` / ``decode_failures``.
  """
  data = _data_config(config)
  size = config.image_size
  if data.name == 'samples':
    return sources.SamplesSource(train=train, image_size=size)
  if data.name == 'folder':
    readable, unreadable = sources.scan_folder(data.path)
    train_files, eval_files = sources.split_folder(readable, data.num_eval_images)
    return sources.FolderSource(data.path, train_files if train else eval_files, size,
                                unreadable=unreadable)
  if data.name in sources.TFDS_NAMES:
    split = data.train_split if train else data.eval_split
    return sources.TfdsSource(data.name, split, data.data_dir, size)
  raise ValueError(f'config.data.name={data.name!r} is not one of {NAMES}.')


def _to_example(image: np.ndarray) -> Batch:
  return {'image': image}


def _random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return image[:, ::-1] if rng.random() < 0.5 else image


def _read_options(worker_count: int = 0) -> grain.ReadOptions:
  # Threads decode whole batches in parallel (PIL releases the GIL); the buffer counts
  # batches, so keep it small: grain's default of 500 can be gigabytes. Worker
  # processes each run their own threads, so they get few.
  threads = 2 if worker_count else max(1, min(8, os.cpu_count() or 1))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


def _pipeline_seed(seed: int, process_index: int) -> int:
  """uint32 seed for shuffle/flip, distinct per process (their shards differ anyway)."""
  return int(np.random.SeedSequence([int(seed), int(process_index)]).generate_state(1)[0])


def _even_split(num: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of this process's shard: ShardByJaxProcess(drop_remainder=True)'s rule."""
  per_process = num // process_count
  if num % process_count:
    logging.warning('Dropping %d of %d train images so that %d processes get equal '
                    'shards.', num % process_count, num, process_count)
  return per_process * process_index, per_process * (process_index + 1)


def create_train_iterator(config: ml_collections.ConfigDict, process_index: int = 0,
                          process_count: int = 1) -> grain.DatasetIterator:
  """Endless iterator of {'image': uint8 [per_host_batch, S, S, C]} for this process.

  Each process reads a disjoint contiguous shard of the (optionally truncated) train
  split, of equal size on every process (the remainder is dropped), shuffled with
  ``config.seed`` and reshuffled every epoch; batches run across epoch boundaries.

  Args:
    config: top-level config (batch_size is global; image_size, seed, data.*).
    process_index: this process (``jax.process_index()``).
    process_count: number of processes (``jax.process_count()``).

  Returns:
    A grain ``DatasetIterator``: ``get_state()``/``set_state()`` (JSON-able dicts) and
    ``grain.checkpoint.CheckpointSave(it)``/``CheckpointRestore(it)`` with orbax.
  """
  validate_config(config, process_count)
  _check_int(process_index, 'process_index', 0)
  if process_index >= process_count:
    raise ValueError(f'process_index={process_index} must be < process_count='
                     f'{process_count}.')
  data = _data_config(config)
  per_host_batch = config.batch_size // process_count
  source = create_source(config, train=True)
  ds = grain.MapDataset.source(source)
  if data.num_train_images:
    if data.num_train_images > len(ds):
      logging.warning('config.data.num_train_images=%d > %d images in the train split; '
                      'using all of them.', data.num_train_images, len(ds))
    ds = ds[:data.num_train_images]
  start, end = _even_split(len(ds), process_index, process_count)
  if end - start < per_host_batch:
    raise ValueError(
        f'Process {process_index} gets {end - start} train images, fewer than its batch '
        f'of {per_host_batch}; use more train images or a smaller config.batch_size.')
  ds = ds[start:end]
  ds = ds.seed(_pipeline_seed(config.get('seed', 0), process_index))
  ds = ds.shuffle().repeat(None)
  if data.random_flip:
    ds = ds.random_map(_random_flip)
  ds = ds.map(_to_example).batch(per_host_batch, drop_remainder=True)
  iter_ds = ds.to_iter_dataset(_read_options(data.worker_count))
  if data.worker_count > 0:
    # grain reads its debug flags in the parent before spawning workers; outside
    # absl.app.run (notebooks, pytest) nothing has parsed the flags yet.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=data.worker_count, per_worker_buffer_size=2))
  logging.info('Train data: %s, process %d/%d reads images [%d, %d), %d per batch, %d '
               'workers.', source, process_index, process_count, start, end,
               per_host_batch, data.worker_count)
  return iter(iter_ds)


def create_eval_batches(config: ml_collections.ConfigDict,
                        drop_remainder: bool = False) -> list[Batch]:
  """The first ``num_eval_images`` eval images as {'image': uint8 [B, S, S, C]} batches.

  Deterministic (no shuffle, no flip), identical on every process, decoded once into
  memory (num_eval_images * S * S * C bytes). B = config.batch_size; the last batch is
  smaller when num_eval_images isn't a multiple of it, unless ``drop_remainder`` (then
  only whole batches are kept). Fewer images than asked are used, with a warning, when
  the split is smaller.
  """
  validate_config(config)
  data = _data_config(config)
  source = create_source(config, train=False)
  count = data.num_eval_images
  if count > len(source):
    logging.warning('config.data.num_eval_images=%d > %d images in the eval split; using '
                    'all of them.', count, len(source))
    count = len(source)
  ds = grain.MapDataset.source(source)[:count].map(_to_example)
  ds = ds.batch(config.batch_size, drop_remainder=drop_remainder)
  return list(ds.to_iter_dataset(_read_options()))

