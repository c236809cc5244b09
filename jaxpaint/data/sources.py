"""Random-access image sources for grain: TFDS, a folder of images, skimage samples.

Every source has ``__len__`` and ``__getitem__(index) -> uint8 [S, S, C]`` with
``S = image_size`` (grain's ``RandomAccessDataSource`` protocol). Sources are cheap to
pickle, so grain worker processes can receive them; heavy state (decoded photos) is
rebuilt lazily in each process.
"""

from collections.abc import Sequence
import functools
import hashlib
import os

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps

TFDS_NAMES = ('mnist', 'cifar10', 'celeb_a')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')

# `samples`: photos shipped inside scikit-image that load offline (probed on 0.26; `cat`
# is the same photo as `chelsea`, so only the latter is used). Train and eval never share
# a photo. Grayscale photos are repeated to RGB.
SAMPLES_TRAIN_PHOTOS = (
    'astronaut', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
    'retina', 'stereo_motorcycle', 'brick', 'grass', 'moon', 'coins')
SAMPLES_EVAL_PHOTOS = ('chelsea', 'camera', 'gravel', 'clock')
SAMPLES_TRAIN_LENGTH = 10_000
SAMPLES_EVAL_LENGTH = 1_000


def resize_box(pil: Image.Image, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """Resizes the ``box`` (left, top, right, bottom) region of ``pil`` to [size, size, C].

  Bicubic, antialiased when shrinking; ``reducing_gap`` box-filters large reductions
  first (several times faster, <0.2 grey levels off on average).
  """
  out = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box,
                              reducing_gap=2.0))
  return out[..., None] if out.ndim == 2 else out


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Largest centred square, resized to ``size``.

  Args:
    image: uint8 [H, W, C] with C in {1, 3}.
    size: output side.

  Returns:
    uint8 [size, size, C]; the exact crop (no resampling) when its side is ``size``.
  """
  h, w, c = image.shape
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  if side == size:
    return np.ascontiguousarray(image[top:top + side, left:left + side])
  pil = Image.fromarray(image[..., 0] if c == 1 else image)
  return resize_box(pil, (left, top, left + side, top + side), size)


# ----------------------------------------------------------------------------- TFDS


class DatasetNotPreparedError(ValueError):
  """A TFDS dataset is missing from data_dir (jaxpaint never downloads implicitly)."""


def _tfds_mock_active() -> bool:
  """True inside ``tfds.testing.mock_data``.

  The mock replaces ``DatasetBuilder.download_and_prepare`` (with a no-op defined in
  ``tensorflow_datasets.testing.mocking``), redirects every builder to its bundled
  metadata folder and fakes the records, so ``is_prepared()`` is False there although
  reading works. We detect the mock by that replaced method and skip the on-disk check.
  """
  from tensorflow_datasets.core import dataset_builder  # pylint: disable=g-import-not-at-top
  fn = dataset_builder.DatasetBuilder.download_and_prepare
  return getattr(fn, '__module__', '') == 'tensorflow_datasets.testing.mocking'


def _prepare_hint(name: str, data_dir: str) -> str:
  root = data_dir or '~/tensorflow_datasets'
  hint = (
      f'Prepare it once (needs internet) in the array_record format, e.g.\n'
      f'  python -c "import tensorflow_datasets as tfds; tfds.builder(\'{name}\', '
      f'data_dir=\'{root}\', file_format=\'array_record\').download_and_prepare()"\n'
      f'or `tfds build {name} --data_dir={root} --file_format=array_record` '
      '(the CLI also needs apache-beam; tfds 4.9.x building on Python >= 3.9 may also '
      'need `pip install importlib_resources`).')
  if name == 'celeb_a':
    hint += ('\nCelebA is fetched from Google Drive, which often refuses with a quota '
             'error; you may have to download the files by hand (see '
             'https://www.tensorflow.org/datasets/catalog/celeb_a).')
  return hint


def check_tfds_prepared(name: str, data_dir: str) -> None:
  """Raises DatasetNotPreparedError within a second if ``name`` can't be read offline.

  Only local files are inspected (no download, no GCS). Under ``tfds.testing.mock_data``
  the check is skipped, see :func:`_tfds_mock_active`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if _tfds_mock_active():
    return
  shown = data_dir or '(TFDS default)'
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetNotPreparedError(
        f'Cannot open TFDS dataset {name!r} in data_dir={shown}: {e}\n'
        f'{_prepare_hint(name, data_dir)}') from e
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} is not prepared in data_dir={shown} (looked for '
        f'{builder.data_dir}); jaxpaint never downloads implicitly.\n'
        f'{_prepare_hint(name, data_dir)}')
  formats = {builder.info.file_format}
  formats.update(getattr(builder.info, 'alternative_file_formats', ()) or ())
  readable = {tfds.core.FileFormat.ARRAY_RECORD, tfds.core.FileFormat.PARQUET}
  if not formats & readable:
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} in {builder.data_dir} was prepared as '
        f'{", ".join(sorted(str(f.value) for f in formats if f))}, which has no random '
        'access (tfds.load\'s default). Prepare it again in another data_dir, '
        f'or delete it first.\n{_prepare_hint(name, data_dir)}')


class TfdsSource:
  """A TFDS split read through ``tfds.data_source`` (array_record; no TensorFlow).

  Images are centre-cropped to a square and resized only when needed: MNIST [28, 28, 1]
  and CIFAR-10 [32, 32, 3] pass through at their native size; CelebA's aligned
  [218, 178, 3] faces lose 20 rows top and bottom (the common 178x178 centre crop,
  which keeps the whole face and some hair) before resizing.
  """

  def __init__(self, name: str, split: str, data_dir: str, image_size: int):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    check_tfds_prepared(name, data_dir)
    self.name, self.split, self.image_size = name, split, image_size
    self._source = tfds.data_source(name, split=split, data_dir=data_dir or None,
                                    download=False)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    image = np.asarray(self._source[int(index)]['image'])
    return center_crop_resize(image, self.image_size)

  def __repr__(self) -> str:
    return f'TfdsSource({self.name}:{self.split}, {len(self)} images)'


# --------------------------------------------------------------------------- folder


def _to_rgb(pil: Image.Image) -> np.ndarray:
  """Any PIL mode -> uint8 [H, W, 3]; alpha is dropped, 16-bit gray scaled to 8 bits."""
  if pil.mode.startswith('I;16') or pil.mode in ('I', 'F'):
    gray = np.asarray(pil, dtype=np.float64)
    wide = pil.mode.startswith('I;16') or gray.max() > 255  # 'I'/'F': guess the range
    gray = np.clip(np.round(gray / (257.0 if wide else 1.0)), 0, 255)
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
  return np.asarray(pil.convert('RGB'))


def load_image(path: str, size: int) -> np.ndarray:
  """Decodes an image file to uint8 [size, size, 3] (EXIF rotation, RGB, centre crop).

  Raises whatever PIL raises for unreadable files (OSError, SyntaxError, ...).
  """
  with Image.open(path) as pil:
    # JPEG only: let libjpeg decode at a reduced scale that still covers `size`.
    pil.draft('RGB', (size, size))
    pil = ImageOps.exif_transpose(pil)
    rgb = _to_rgb(pil)
  return center_crop_resize(rgb, size)


def list_image_files(root: str) -> list[str]:
  """Relative paths of jpg/jpeg/png/webp files under ``root`` (recursive, sorted)."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for filename in filenames:
      if filename.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(dirpath, filename), root))
  return sorted(found)


@functools.lru_cache(maxsize=4)
def scan_folder(root: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(readable, unreadable) relative paths; "readable" = PIL recognises the header.

  Opening reads only the header, so this is fast; files truncated after the header pass
  and are caught when decoded (:class:`FolderSource`). Cached per process and folder.
  """
  if not root:
    raise ValueError("config.data.path is empty; set it to a folder of images for "
                     "config.data.name='folder'.")
  if not os.path.isdir(root):
    raise ValueError(f'Image folder {root!r} (config.data.path) does not exist or is '
                     'not a directory.')
  readable, unreadable = [], []
  for rel in list_image_files(root):
    try:
      with Image.open(os.path.join(root, rel)):
        pass
      readable.append(rel)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('Skipping unreadable image %s: %s', os.path.join(root, rel), e)
      unreadable.append(rel)
  if not readable:
    raise ValueError(
        f'No readable images in {root!r} (searched recursively for '
        f'{"/".join(IMAGE_EXTENSIONS)}, case-insensitive; {len(unreadable)} unreadable).')
  if unreadable:
    logging.warning('Image folder %s: skipped %d of %d files that are not images.', root,
                    len(unreadable), len(readable) + len(unreadable))
  return tuple(readable), tuple(unreadable)


def split_folder(files: Sequence[str], num_eval: int) -> tuple[list[str], list[str]]:
  """Deterministic (train, eval) split of relative paths.

  Eval gets the ``num_eval`` files whose SHA-1 of the relative path is smallest: spread
  over sub-folders, independent of the listing order, and a file's side only changes
  when other files are added or removed. Both lists keep the sorted path order.
  """
  if num_eval >= len(files):
    raise ValueError(
        f'The image folder has {len(files)} readable images but config.data.'
        f'num_eval_images={num_eval}; lower num_eval_images so that some are left '
        'for training.')
  by_hash = sorted(files, key=lambda f: hashlib.sha1(f.encode('utf-8')).hexdigest())
  eval_set = set(by_hash[:num_eval])
  return ([f for f in files if f not in eval_set], [f for f in files if f in eval_set])


class FolderSource:
  """Images from a folder; undecodable files are skipped, counted and logged.

  The length is fixed up front (grain needs random access), so a file that fails to
  decode is replaced by the next decodable file in path order (wrapping around): that
  image then appears twice per epoch. Failures are remembered per process, logged once
  per file with absl ``logging.warning``, and counted in :attr:`num_skipped` (together
  with the files rejected at scan time). With grain worker processes each worker keeps
  its own count; the warnings still reach the log.
  """

  def __init__(self, root: str, files: Sequence[str], image_size: int,
               unreadable: Sequence[str] = ()):
    if not files:
      raise ValueError(f'No images to read in {root!r}.')
    self.root, self.image_size = root, image_size
    self.files = tuple(files)
    self.unreadable = tuple(unreadable)  # rejected when the folder was scanned
    self.decode_failures: dict[str, str] = {}  # relative path -> error, this process

  @property
  def num_skipped(self) -> int:
    """Files skipped so far: rejected at scan time + failed to decode in this process."""
    return len(self.unreadable) + len(self.decode_failures)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> np.ndarray:
    n = len(self.files)
    for step in range(n):
      rel = self.files[(int(index) + step) % n]
      if rel in self.decode_failures:
        continue
      path = os.path.join(self.root, rel)
      try:
        return load_image(path, self.image_size)
      except Exception as e:  # pylint: disable=broad-except
        self.decode_failures[rel] = f'{type(e).__name__}: {e}'
        logging.warning('Skipping image that fails to decode: %s (%s: %s); %d skipped '
                        'so far.', path, type(e).__name__, e, self.num_skipped)
    raise ValueError(f'None of the {n} images in {self.root!r} can be decoded.')

  def __repr__(self) -> str:
    return f'FolderSource({self.root!r}, {len(self)} images)'


# -------------------------------------------------------------------------- samples


@functools.lru_cache(maxsize=None)
def _load_photo(name: str) -> Image.Image:
  """An RGB photo from ``skimage.data``, decoded once per process."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = getattr(skimage.data, name)()
  if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity)
    photo = photo[0]
  photo = np.asarray(photo)
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  return Image.fromarray(np.ascontiguousarray(photo[..., :3].astype(np.uint8)), 'RGB')


class SamplesSource:
  """Offline toy dataset: random square crops of scikit-image's sample photos.

  Record ``i`` is a pure function of ``(photos, i)``: a generator seeded with
  ``[salt, i]`` picks a photo, a crop side between max(image_size / 2, a quarter of
  the photo's short side) and the whole short side, and a position; the crop is then
  resized to ``image_size``. Train (:data:`SAMPLES_TRAIN_PHOTOS`) and eval
  (:data:`SAMPLES_EVAL_PHOTOS`) use different photos and salts.
  """

  def __init__(self, train: bool, image_size: int, length: int | None = None):
    self.train, self.image_size = train, image_size
    self.photos = SAMPLES_TRAIN_PHOTOS if train else SAMPLES_EVAL_PHOTOS
    self._salt = 0 if train else 1
    self._length = length or (SAMPLES_TRAIN_LENGTH if train else SAMPLES_EVAL_LENGTH)

  def __len__(self) -> int:
    return self._length

  def photo_index(self, index: int) -> int:
    """Which of :attr:`photos` record ``index`` is cropped from."""
    return int(np.random.default_rng([self._salt, int(index)]).integers(len(self.photos)))

  def __getitem__(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self._salt, int(index)])
    photo = _load_photo(self.photos[rng.integers(len(self.photos))])
    w, h = photo.size
    short = min(h, w)
    low = min(short, max(self.image_size // 2, short // 4))
    side = int(rng.integers(low, short + 1))
    top = int(rng.integers(h - side + 1))
    left = int(rng.integers(w - side + 1))
    return resize_box(photo, (left, top, left + side, top + side), self.image_size)

  def __repr__(self) -> str:
    return f'SamplesSource({"train" if self.train else "eval"}, {len(self)} crops)'
