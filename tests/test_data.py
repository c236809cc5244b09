"""Tests of jaxpaint.data: sources, sharded/checkpointable train iterator, eval batches."""

import io
import socket

import grain
import ml_collections
import numpy as np
from PIL import Image
import pytest
import skimage.data
import skimage.transform
import tensorflow_datasets as tfds

from jaxpaint import data
from jaxpaint.data import pipeline
from jaxpaint.data import sources


def make_config(image_size=16, batch_size=4, seed=0, **data_kw):
  return ml_collections.ConfigDict(dict(
      image_size=image_size, batch_size=batch_size, seed=seed,
      data=dict(data.default_config().to_dict(), **data_kw)))


def take(iterator, n):
  return [next(iterator)['image'] for _ in range(n)]


# ------------------------------------------------------------------------ config


def test_num_channels_without_loading(tmp_path):
  missing = str(tmp_path / 'nothing_here')
  assert data.num_channels(make_config(name='mnist', data_dir=missing)) == 1
  for name in ('cifar10', 'celeb_a', 'samples', 'folder'):
    assert data.num_channels(make_config(name=name, data_dir=missing, path=missing)) == 3


@pytest.mark.parametrize('change, process_count, words', [
    (dict(name='imagenet'), None, 'config.data.name'),
    (dict(num_eval_images=-1), None, 'num_eval_images'),
    (dict(worker_count=1.5), None, 'worker_count'),
    (dict(random_flip='yes'), None, 'random_flip'),
    (dict(), 3, 'divisible'),
    (dict(name='folder', path=''), None, 'config.data.path'),
])
def test_validate_config_rejects(change, process_count, words):
  with pytest.raises(ValueError, match=words):
    data.validate_config(make_config(batch_size=4, **change), process_count=process_count)


def test_validate_config_folder_errors(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    data.validate_config(make_config(name='folder', path=str(tmp_path / 'missing')))
  (tmp_path / 'notes.txt').write_text('no images here')
  with pytest.raises(ValueError, match='No image files'):
    data.validate_config(make_config(name='folder', path=str(tmp_path)))


def test_train_iterator_rejects_bad_processes():
  with pytest.raises(ValueError, match='divisible'):
    data.create_train_iterator(make_config(batch_size=6), process_index=0, process_count=4)
  with pytest.raises(ValueError, match='process_index'):
    data.create_train_iterator(make_config(batch_size=4), process_index=2, process_count=2)


# -------------------------------------------------------------------------- TFDS


def test_center_crop_resize_crops_the_middle_square():
  # CelebA-shaped [218, 178, 3]: rows outside [20, 198) are white, the square is a
  # horizontal ramp; the 178x178 centre crop must keep exactly the ramp.
  rng = np.random.default_rng(0)
  image = np.full((218, 178, 3), 255, np.uint8)
  ramp = np.linspace(0, 200, 178)[None, :, None] + rng.uniform(0, 1, (178, 178, 3))
  image[20:198] = ramp.astype(np.uint8)
  np.testing.assert_array_equal(sources.center_crop_resize(image, 178), image[20:198])
  small = sources.center_crop_resize(image, 64)
  assert small.shape == (64, 64, 3) and small.dtype == np.uint8
  # Independent reference: scikit-image's antialiased bicubic resize of the same crop.
  reference = skimage.transform.resize(image[20:198].astype(np.float64), (64, 64), order=3,
                                       anti_aliasing=True, preserve_range=True)
  assert np.abs(small.astype(np.float64) - reference).mean() < 2.0
  assert small.max() < 230  # no white band leaked in


def test_center_crop_resize_gray_keeps_channel_axis():
  gray = np.random.default_rng(1).integers(0, 256, (28, 28, 1), dtype=np.uint8)
  np.testing.assert_array_equal(sources.center_crop_resize(gray, 28), gray)
  assert sources.center_crop_resize(gray, 32).shape == (32, 32, 1)


@pytest.mark.parametrize('name, size, channels, raw_shape', [
    ('mnist', 28, 1, (28, 28, 1)),
    ('cifar10', 32, 3, (32, 32, 3)),
    ('celeb_a', 24, 3, (218, 178, 3)),
])
def test_tfds_pipelines_under_mock(tmp_path, name, size, channels, raw_shape):
  config = make_config(image_size=size, batch_size=4, name=name, data_dir=str(tmp_path),
                       num_eval_images=6)
  with tfds.testing.mock_data(num_examples=10):
    data.validate_config(config)  # skips the on-disk check only because mocked
    assert data.num_channels(config) == channels
    batch = next(data.create_train_iterator(config))['image']
    assert batch.shape == (4, size, size, channels) and batch.dtype == np.uint8
    evals = data.create_eval_batches(config)
    assert [b['image'].shape for b in evals] == [(4, size, size, channels),
                                                 (2, size, size, channels)]
    raw = tfds.data_source(name, split='test', download=False)
    for i in range(6):
      record = np.asarray(raw[i]['image'])
      assert record.shape == raw_shape
      expected = sources.center_crop_resize(record, size)
      np.testing.assert_array_equal(evals[i // 4]['image'][i % 4], expected)
    if raw_shape[:2] == (size, size):  # native size passes through untouched
      np.testing.assert_array_equal(evals[0]['image'][0], np.asarray(raw[0]['image']))


@pytest.mark.parametrize('name', sources.TFDS_NAMES)
def test_tfds_not_prepared_error_names_dataset_and_dir(tmp_path, monkeypatch, name):
  def no_network(*args, **kwargs):
    raise AssertionError('the not-prepared check must not touch the network')

  def no_download(*args, **kwargs):
    raise AssertionError('the not-prepared check must not download')

  monkeypatch.setattr(socket.socket, 'connect', no_network)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  config = make_config(name=name, data_dir=str(tmp_path))
  for call in (data.validate_config, data.create_train_iterator, data.create_eval_batches):
    with pytest.raises(data.DatasetNotPreparedError) as info:
      call(config)
    message = str(info.value)
    assert repr(name) in message and str(tmp_path) in message
    assert 'download_and_prepare' in message and 'array_record' in message
  assert ('Google Drive' in message) == (name == 'celeb_a')


# ------------------------------------------------------------------------ folder


def _png_bytes(array, fmt='PNG', **kw):
  buffer = io.BytesIO()
  image = array if isinstance(array, Image.Image) else Image.fromarray(array)
  image.save(buffer, format=fmt, **kw)
  return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
  """Real images (PNG/JPEG/WEBP, gray/RGBA/palette, nested, upper-case extensions)
  plus a truncated JPEG, a text file named .png and an ignored .txt."""
  root = tmp_path / 'photos'
  (root / 'sub' / 'deeper').mkdir(parents=True)
  astronaut = skimage.data.astronaut()[::8, ::8]  # [64, 64, 3]
  coffee = skimage.data.coffee()[::8, ::8]  # [50, 75, 3]
  camera = skimage.data.camera()[::8, ::8]  # [64, 64] gray
  rocket = skimage.data.rocket()[::8, ::8]  # [54, 80, 3]
  files = {
      'a_astronaut.png': _png_bytes(astronaut),
      'b_coffee.JPG': _png_bytes(coffee, 'JPEG', quality=95),
      'sub/c_camera.png': _png_bytes(camera),
      'sub/d_rgba.PNG': _png_bytes(np.concatenate(
          [rocket, np.full(rocket.shape[:2] + (1,), 77, np.uint8)], -1)),
      'sub/deeper/e_palette.png': _png_bytes(
          Image.fromarray(astronaut).convert('P', palette=Image.Palette.ADAPTIVE)),
      'sub/deeper/f_lossless.WEBP': _png_bytes(rocket, 'WEBP', lossless=True),
      'g_truncated.jpeg': _png_bytes(astronaut, 'JPEG', quality=95)[:1500],
      'h_not_an_image.png': b'this is plain text, not a PNG',
      'i_readme.txt': b'ignored: not an image extension',
  }
  for rel, content in files.items():
    (root / rel).write_bytes(content)
  return root


def test_folder_scan_and_split(image_folder):
  readable, unreadable = sources.scan_folder(str(image_folder))
  assert unreadable == ('h_not_an_image.png',)
  assert readable == tuple(sorted([
      'a_astronaut.png', 'b_coffee.JPG', 'g_truncated.jpeg', 'sub/c_camera.png',
      'sub/d_rgba.PNG', 'sub/deeper/e_palette.png', 'sub/deeper/f_lossless.WEBP']))
  train, evals = sources.split_folder(readable, 2)
  assert len(evals) == 2 and not set(train) & set(evals)
  assert sorted(train + evals) == sorted(readable)
  assert sources.split_folder(list(reversed(readable)), 2)[1] == evals[::-1]
  with pytest.raises(ValueError, match='num_eval_images'):
    sources.split_folder(readable, 7)


def test_folder_source_decodes_and_skips_bad_files(image_folder, caplog):
  readable, unreadable = sources.scan_folder(str(image_folder))
  source = sources.FolderSource(str(image_folder), readable, 40, unreadable=unreadable)
  assert source.num_skipped == 1  # the text file, rejected by the scan
  with caplog.at_level('WARNING'):
    images = [source[i] for i in range(len(source))]
  assert all(x.shape == (40, 40, 3) and x.dtype == np.uint8 for x in images)
  assert list(source.decode_failures) == ['g_truncated.jpeg']
  assert source.num_skipped == 2
  assert 'g_truncated.jpeg' in caplog.text
  # The truncated file's slot holds the next file in path order.
  bad = readable.index('g_truncated.jpeg')
  np.testing.assert_array_equal(images[bad], images[bad + 1])
  # A second pass neither re-logs nor re-counts.
  caplog.clear()
  np.testing.assert_array_equal(source[bad], images[bad])
  assert source.num_skipped == 2 and 'g_truncated' not in caplog.text


def test_sixteen_bit_gray_png_scaled_to_eight_bits(tmp_path):
  gray16 = np.random.default_rng(2).integers(0, 65536, (12, 12), dtype=np.uint16)
  Image.fromarray(gray16).save(tmp_path / 'gray16.png')
  loaded = sources.load_image(str(tmp_path / 'gray16.png'), 12)
  expected = np.round(gray16 / 257.0).astype(np.uint8)
  np.testing.assert_array_equal(loaded, np.repeat(expected[..., None], 3, -1))


def test_folder_conversions_are_exact(image_folder):
  # At image_size == the short side there is no resampling: exact centre crops.
  astronaut = skimage.data.astronaut()[::8, ::8]
  rocket = skimage.data.rocket()[::8, ::8]  # [54, 80, 3]: crop columns 13..67
  camera = skimage.data.camera()[::8, ::8]
  root = str(image_folder)
  np.testing.assert_array_equal(sources.load_image(f'{root}/a_astronaut.png', 64),
                                astronaut)
  np.testing.assert_array_equal(sources.load_image(f'{root}/sub/c_camera.png', 64),
                                np.repeat(camera[..., None], 3, -1))
  np.testing.assert_array_equal(sources.load_image(f'{root}/sub/d_rgba.PNG', 54),
                                rocket[:, 13:67])
  np.testing.assert_array_equal(
      sources.load_image(f'{root}/sub/deeper/f_lossless.WEBP', 54), rocket[:, 13:67])
  palette = sources.load_image(f'{root}/sub/deeper/e_palette.png', 64)
  assert np.abs(palette.astype(int) - astronaut).mean() < 12  # 256-colour quantised
  resized = sources.load_image(f'{root}/a_astronaut.png', 24)
  reference = skimage.transform.resize(astronaut.astype(np.float64), (24, 24), order=3,
                                       anti_aliasing=True, preserve_range=True)
  assert resized.shape == (24, 24, 3)
  assert np.abs(resized - reference).mean() < 6.0


def test_folder_pipeline(image_folder):
  config = make_config(image_size=20, batch_size=2, name='folder',
                       path=str(image_folder), num_eval_images=2, random_flip=False)
  data.validate_config(config)
  train_source = data.create_source(config, train=True)
  eval_source = data.create_source(config, train=False)
  assert len(train_source) == 5 and len(eval_source) == 2
  assert not set(train_source.files) & set(eval_source.files)
  batches = take(data.create_train_iterator(config), 4)
  assert all(b.shape == (2, 20, 20, 3) and b.dtype == np.uint8 for b in batches)
  evals = data.create_eval_batches(config)
  assert len(evals) == 1
  np.testing.assert_array_equal(evals[0]['image'],
                                np.stack([eval_source[0], eval_source[1]]))


def test_folder_without_decodable_images(tmp_path):
  (tmp_path / 'x.png').write_bytes(b'not a png')
  (tmp_path / 'y.jpg').write_bytes(b'')
  config = make_config(name='folder', path=str(tmp_path), num_eval_images=0)
  data.validate_config(config)  # names look fine; nothing is decoded here
  with pytest.raises(ValueError, match='No readable images'):
    data.create_train_iterator(config)


# ----------------------------------------------------------------------- samples


def test_samples_train_and_eval_use_different_photos():
  assert not set(sources.SAMPLES_TRAIN_PHOTOS) & set(sources.SAMPLES_EVAL_PHOTOS)
  train = sources.SamplesSource(train=True, image_size=24)
  evals = sources.SamplesSource(train=False, image_size=24)
  assert train.photos == sources.SAMPLES_TRAIN_PHOTOS
  assert evals.photos == sources.SAMPLES_EVAL_PHOTOS
  used_train = {train.photos[train.photo_index(i)] for i in range(200)}
  used_eval = {evals.photos[evals.photo_index(i)] for i in range(100)}
  assert used_train == set(sources.SAMPLES_TRAIN_PHOTOS)
  assert used_eval == set(sources.SAMPLES_EVAL_PHOTOS)


def test_samples_records_are_deterministic_crops():
  a = sources.SamplesSource(train=True, image_size=24)
  b = sources.SamplesSource(train=True, image_size=24)
  records = [a[i] for i in range(12)]
  for i, record in enumerate(records):
    assert record.shape == (24, 24, 3) and record.dtype == np.uint8
    np.testing.assert_array_equal(record, b[i])
  assert len({r.tobytes() for r in records}) == 12
  assert len(a) == sources.SAMPLES_TRAIN_LENGTH
  assert sources.SamplesSource(train=False, image_size=8)[3].shape == (8, 8, 3)


# ---------------------------------------------------------------------- pipeline


def _epoch_keys(iterator, num_batches):
  return [img.tobytes() for batch in take(iterator, num_batches) for img in batch]


def test_sharding_two_processes_disjoint_and_complete():
  config = make_config(image_size=8, batch_size=8, num_train_images=40, random_flip=False)
  source = sources.SamplesSource(train=True, image_size=8)
  shards = []
  for index in (0, 1):
    iterator = data.create_train_iterator(config, process_index=index, process_count=2)
    start = iterator.get_state()
    assert next(iterator)['image'].shape == (4, 8, 8, 3)
    iterator.set_state(start)
    shards.append(_epoch_keys(iterator, 5))  # 20 images: one epoch of this shard
  expected = [{source[i].tobytes() for i in range(20)},
              {source[i].tobytes() for i in range(20, 40)}]
  for keys, want in zip(shards, expected):
    assert len(keys) == 20 and set(keys) == want
  assert not set(shards[0]) & set(shards[1])


@pytest.mark.parametrize('num, count', [(40, 2), (41, 2), (10, 3), (7, 7), (100, 8)])
def test_even_split_matches_shard_by_jax_process(num, count):
  from grain._src.core import sharding  # pylint: disable=g-import-not-at-top
  for index in range(count):
    options = sharding.ShardOptions(index, count, drop_remainder=True)
    assert pipeline._even_split(num, index, count) == sharding.even_split(num, options)


def test_shuffle_seed_and_epochs():
  config = make_config(image_size=8, batch_size=4, num_train_images=12, random_flip=False)
  first = _epoch_keys(data.create_train_iterator(config), 6)
  again = _epoch_keys(data.create_train_iterator(config), 6)
  other = _epoch_keys(data.create_train_iterator(make_config(
      image_size=8, batch_size=4, num_train_images=12, random_flip=False, seed=1)), 6)
  assert first == again and first != other
  assert set(first[:12]) == set(first[12:]) and first[:12] != first[12:]  # reshuffled


def test_random_flip_mirrors_some_images():
  config = make_config(image_size=8, batch_size=4, num_train_images=16)
  source = sources.SamplesSource(train=True, image_size=8)
  plain = {source[i].tobytes(): 'plain' for i in range(16)}
  plain.update({source[i][:, ::-1].tobytes(): 'flipped' for i in range(16)})
  kinds = [plain.get(key) for key in _epoch_keys(data.create_train_iterator(config), 4)]
  assert None not in kinds and {'plain', 'flipped'} == set(kinds)


def test_get_state_set_state_round_trip():
  config = make_config(image_size=8, batch_size=4, num_train_images=10)
  iterator = data.create_train_iterator(config)
  take(iterator, 4)  # crosses an epoch boundary
  state = iterator.get_state()
  expected = take(iterator, 5)
  resumed = data.create_train_iterator(config)
  resumed.set_state(state)
  for want, got in zip(expected, take(resumed, 5)):
    np.testing.assert_array_equal(want, got)


def test_orbax_checkpoint_round_trip(tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  config = make_config(image_size=8, batch_size=4)
  iterator = data.create_train_iterator(config)
  take(iterator, 3)
  with ocp.CheckpointManager(str(tmp_path / 'ckpt'), item_names=('data',)) as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = take(iterator, 3)
    resumed = data.create_train_iterator(config)
    manager.restore(3, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(resumed)))
  for want, got in zip(expected, take(resumed, 3)):
    np.testing.assert_array_equal(want, got)


def test_eval_batches_deterministic():
  config = make_config(image_size=8, batch_size=4, num_eval_images=10)
  first, second = data.create_eval_batches(config), data.create_eval_batches(config)
  assert [b['image'].shape[0] for b in first] == [4, 4, 2]
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['image'], b['image'])
  source = sources.SamplesSource(train=False, image_size=8)
  np.testing.assert_array_equal(first[2]['image'], np.stack([source[8], source[9]]))
  dropped = data.create_eval_batches(config, drop_remainder=True)
  assert [b['image'].shape[0] for b in dropped] == [4, 4]


def test_worker_processes_match_in_process():
  config = make_config(image_size=8, batch_size=4, num_train_images=20)
  expected = take(data.create_train_iterator(config), 3)
  config.data.worker_count = 1
  iterator = data.create_train_iterator(config)
  try:
    got = [np.array(img) for img in take(iterator, 3)]
  finally:
    iterator.close()
  for want, have in zip(expected, got):
    np.testing.assert_array_equal(want, have)
