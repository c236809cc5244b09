"""Tests for jaxpaint.masks: properties of the generators, checked against NumPy/SciPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from scipy import ndimage
from scipy import stats

from jaxpaint import masks

H, W = 32, 48  # non-square, so swapped axes show up
RANDOM_KINDS = ('boxes', 'lines', 'free_form', 'lama_thin', 'lama_medium', 'lama_thick')
EIGHT = np.ones((3, 3), int)  # 8-connectivity for ndimage.label


def _config(kind, **overrides):
  c = masks.default_config()
  c.kind = kind
  c.box_size = 8
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _holes(m):
  """[B, H, W, 1] masks -> bool holes [B, H, W]."""
  return np.asarray(m)[..., 0] == 0


@functools.lru_cache(maxsize=None)
def _jitted(kind):
  return jax.jit(masks.make_mask_fn(_config(kind), H, W), static_argnums=1)


@functools.lru_cache(maxsize=None)
def _draws(kind):
  """Two draws from key 0, one from key 1, at batch 64 (compiled once per kind)."""
  f = _jitted(kind)
  k0, k1 = jax.random.key(0), jax.random.key(1)
  return np.asarray(f(k0, 64)), np.asarray(f(k0, 64)), np.asarray(f(k1, 64))


# ----------------------------------------------------------------------------------------
# Every random kind, through make_mask_fn.


@pytest.mark.parametrize('kind', RANDOM_KINDS)
def test_random_kind_shape_values_determinism(kind):
  a, a_again, b = _draws(kind)
  assert a.shape == (64, H, W, 1) and a.dtype == np.float32
  assert set(np.unique(a)) <= {0.0, 1.0}
  np.testing.assert_array_equal(a, a_again)
  assert (a != b).any(axis=(1, 2, 3)).mean() > 0.9  # another key, other masks
  assert len({m.tobytes() for m in a}) == 64  # every example differs
  assert _holes(a).any(axis=(1, 2)).all()  # every mask has a hole
  assert (~_holes(a)).any(axis=(1, 2)).all()  # and known pixels


# (min, max, low mean, high mean) of the hole ratio over 128 masks of 32 x 48.
PLAUSIBLE = {
    'boxes': (2 * 64 * 0.5 / (H * W), 2 * 64 / (H * W), None, None),
    'lines': (0.002, 0.6, 0.08, 0.3),
    'free_form': (0.005, 0.6, 0.07, 0.3),
    'lama_thin': (0.01, 0.5, 0.15, 0.4),
    'lama_medium': (0.002, 0.5, 0.1, 0.35),
    'lama_thick': (0.005, 0.7, 0.15, 0.4),
}


@pytest.mark.parametrize('kind', RANDOM_KINDS)
def test_random_kind_hole_ratios_plausible(kind):
  a, _, b = _draws(kind)
  ratios = 1.0 - np.concatenate([a, b]).mean(axis=(1, 2, 3))
  lo, hi, mean_lo, mean_hi = PLAUSIBLE[kind]
  assert ratios.min() >= lo and ratios.max() <= hi, (ratios.min(), ratios.max())
  if mean_lo is not None:
    assert mean_lo <= ratios.mean() <= mean_hi, ratios.mean()
  assert ratios.std() > 0.01 or kind == 'boxes'
  if kind.startswith('lama'):  # over half hole only when all 5 candidates were
    assert (ratios > 0.5).mean() <= 0.03


def test_jit_equals_eager():
  # Eager runs compile op by op (seconds each), so one kind: lines (capsules in a scan).
  for kind in ('lines',):
    fn = masks.make_mask_fn(_config(kind), H, W)
    for seed in (0, 1):
      key = jax.random.key(seed)
      np.testing.assert_array_equal(np.asarray(fn(key, 64)), _draws(kind)[2 * seed])


def test_free_form_strokes_are_connected():
  a, _, b = _draws('free_form')
  counts = [ndimage.label(h, EIGHT)[1] for h in _holes(np.concatenate([a, b]))]
  assert 1 <= min(counts) and max(counts) <= 3  # one piece per stroke at most
  assert max(counts) > 1  # but several strokes do occur


def test_lines_count_bounded_by_num_lines():
  a, _, b = _draws('lines')
  counts = [ndimage.label(h, EIGHT)[1] for h in _holes(np.concatenate([a, b]))]
  assert min(counts) >= 1 and max(counts) <= 20 and max(counts) > 3


# ----------------------------------------------------------------------------------------
# Rasterisation against a float64 NumPy distance field.


def _np_capsules(a, b, widths, valid, height, width):
  """Brute-force reference: pixel covered iff its distance to a segment <= width / 2."""
  yy, xx = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing='ij')
  d = np.full((len(a), height, width), np.inf)
  for i, ((ay, ax), (by, bx)) in enumerate(zip(a, b)):
    ab = np.array([by - ay, bx - ax])
    denom = ab @ ab
    t = 0.0 if denom == 0 else np.clip(((yy - ay) * ab[0] + (xx - ax) * ab[1]) / denom, 0, 1)
    d[i] = np.hypot(yy - (ay + t * ab[0]), xx - (ax + t * ab[1]))
  margin = d - np.asarray(widths, np.float64)[:, None, None] / 2
  margin = np.where(np.asarray(valid)[:, None, None], margin, np.inf)
  return margin.min(axis=0) <= 0, np.abs(margin).min(axis=0)


def test_capsules_match_numpy_distance_field():
  rng = np.random.default_rng(0)
  n = 12
  a = rng.uniform(-4, [24, 36], (n, 2))
  b = rng.uniform(-4, [24, 36], (n, 2))
  b[0] = a[0]  # a zero-length segment is a disc
  widths = rng.uniform(1, 7, n)
  valid = rng.uniform(size=n) < 0.7
  valid[0] = True
  got = np.asarray(masks._capsules(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                                   jnp.asarray(widths, jnp.float32), jnp.asarray(valid), 20,
                                   30))
  want, slack = _np_capsules(a, b, widths, valid, 20, 30)
  clear = slack > 1e-3  # pixels exactly on an edge may go either way in float32
  assert clear.mean() > 0.98
  np.testing.assert_array_equal(got[clear], want[clear])
  assert 0.05 < want.mean() < 0.95  # the test draws something non-trivial


# ----------------------------------------------------------------------------------------
# Centre squares and boxes.


@pytest.mark.parametrize('height,width,size', [(28, 28, 8), (64, 64, 32), (32, 32, 8),
                                               (31, 48, 7)])
def test_centre_square_exact(height, width, size):
  want = np.ones((3, height, width, 1), np.float32)
  top, left = height // 2 - size // 2, width // 2 - size // 2
  want[:, top:top + size, left:left + size] = 0
  got = masks.centre_square(3, height, width, size)
  assert got.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(got), want)


def test_centre_square_known_windows():
  m = np.asarray(masks.centre_square(1, 64, 64, 32))[0, ..., 0]
  assert (m[16:48, 16:48] == 0).all() and m.sum() == 64 * 64 - 32 * 32
  m = np.asarray(masks.centre_square(1, 28, 28, 8))[0, ..., 0]
  assert (m[10:18, 10:18] == 0).all() and m.sum() == 28 * 28 - 64


def test_boxes_components_and_bounds():
  m = jax.jit(functools.partial(masks.random_boxes, batch=128, height=64, width=64,
                                num_boxes=3, box_size=10))(jax.random.key(3))
  separate = 0
  for hole in _holes(m):
    labels, count = ndimage.label(hole)
    sizes = ndimage.sum(hole, labels, range(1, count + 1))
    assert 1 <= count <= 3 and hole.sum() <= 300
    assert sizes.min() >= 100  # no box is cut by the border
    if hole.sum() == 300:  # no overlap: whole boxes, apart or edge to edge
      assert (sizes % 100 == 0).all()
    if count == 3:  # three separate holes: each a whole 10 x 10 box
      assert (sizes == 100).all()
      for sl in ndimage.find_objects(labels):
        assert (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) == (10, 10)
      separate += 1
  assert separate > 64


def test_boxes_positions_and_size_range():
  m = jax.jit(functools.partial(masks.random_boxes, batch=256, height=40, width=50,
                                num_boxes=1, box_size=(30, 36)))(jax.random.key(4))
  tops, lefts, heights, widths = [], [], [], []
  for hole in _holes(m):
    rows, cols = np.nonzero(hole.any(1))[0], np.nonzero(hole.any(0))[0]
    tops.append(rows[0])
    lefts.append(cols[0])
    heights.append(rows[-1] - rows[0] + 1)
    widths.append(cols[-1] - cols[0] + 1)
    assert hole.sum() == heights[-1] * widths[-1]  # a full rectangle
  # Every size in the range occurs, and every position that keeps the box inside.
  assert set(heights) == set(range(30, 37)) and set(widths) == set(range(30, 37))
  assert all(t + h <= 40 for t, h in zip(tops, heights))
  assert all(l + w <= 50 for l, w in zip(lefts, widths))
  assert min(tops) == 0 and max(t + h for t, h in zip(tops, heights)) == 40
  assert min(lefts) == 0 and max(l + w for l, w in zip(lefts, widths)) == 50
  assert np.std(heights) > 1 and np.corrcoef(heights, widths)[0, 1] < 0.3  # independent


def test_legacy_uint32_key_gives_the_same_masks():
  old = _jitted('boxes')(jax.random.PRNGKey(0), 64)
  np.testing.assert_array_equal(np.asarray(old), _draws('boxes')[0])


# ----------------------------------------------------------------------------------------
# Hole ratios.


def test_hole_ratio_matches_numpy():
  rng = np.random.default_rng(1)
  m = (rng.uniform(size=(6, 9, 13, 1)) < rng.uniform(size=(6, 1, 1, 1))).astype(np.float32)
  np.testing.assert_allclose(np.asarray(masks.hole_ratio(jnp.asarray(m))),
                             (m == 0).mean(axis=(1, 2, 3)), rtol=1e-6)
  with pytest.raises(ValueError, match='B, H, W, 1'):
    masks.hole_ratio(jnp.zeros((9, 13)))


def test_constrain_hole_ratio_picks_first_in_range_else_closest():
  gen = functools.partial(masks.random_boxes, num_boxes=2, box_size=(2, 16))
  key, batch, k, lo, hi = jax.random.key(6), 32, 4, 0.15, 0.3
  got = np.asarray(jax.jit(lambda key: masks.constrain_hole_ratio(
      gen, key, batch, 32, 32, min_ratio=lo, max_ratio=hi, num_candidates=k))(key))
  cands = np.asarray(jax.jit(lambda key: gen(key, batch * k, 32, 32))(key))
  cands = cands.reshape(k, batch, 32, 32, 1)
  ratios = (cands == 0).mean(axis=(2, 3, 4))
  miss = np.maximum(lo - ratios, 0) + np.maximum(ratios - hi, 0)
  fell_back = 0
  for i in range(batch):
    inside = np.nonzero(miss[:, i] == 0)[0]
    j = inside[0] if len(inside) else np.argmin(miss[:, i])
    fell_back += not len(inside)
    np.testing.assert_array_equal(got[i], cands[j, i])
  assert 0 < fell_back < batch  # both branches were exercised


def test_constraint_keeps_free_form_ratios_in_range():
  fn = jax.jit(masks.make_mask_fn(_config('free_form', min_hole_ratio=0.1, max_hole_ratio=0.2,
                                          num_candidates=16), H, W), static_argnums=1)
  ratios = np.concatenate([1 - np.asarray(fn(jax.random.key(s), 64)).mean(axis=(1, 2, 3))
                           for s in range(3)])
  assert ((ratios >= 0.1) & (ratios <= 0.2)).all(), (ratios.min(), ratios.max())
  assert ratios.std() > 0.01


def test_constrain_hole_ratio_rejects_bad_bounds():
  with pytest.raises(ValueError, match='exceeds'):
    masks.constrain_hole_ratio(masks.random_boxes, jax.random.key(0), 2, 16, 16,
                               min_ratio=0.5, max_ratio=0.2)
  with pytest.raises(ValueError, match='num_candidates'):
    masks.constrain_hole_ratio(masks.random_boxes, jax.random.key(0), 2, 16, 16,
                               min_ratio=0.1, max_ratio=0.2, num_candidates=0)


# ----------------------------------------------------------------------------------------
# User mask PNGs.


def _png(tmp_path, array, name='mask.png', mode=None):
  path = tmp_path / name
  Image.fromarray(array, mode=mode).save(path)
  return path


def test_load_mask_png_white_is_hole(tmp_path):
  gray = np.zeros((10, 14), np.uint8)
  gray[2:5, 3:9] = 255
  gray[7, 1] = 128  # just above the 127.5 threshold: hole
  gray[8, 1] = 127  # just below: known
  got = masks.load_mask_png(_png(tmp_path, gray))
  assert got.shape == (10, 14, 1) and got.dtype == np.float32
  np.testing.assert_array_equal(got[..., 0], (gray <= 127.5).astype(np.float32))
  assert got[7, 1, 0] == 0 and got[8, 1, 0] == 1


def test_load_mask_png_rgb_and_rgba_use_luminance(tmp_path):
  rgb = np.zeros((6, 7, 3), np.uint8)
  rgb[0, 0] = (255, 255, 255)  # luminance 255: hole
  rgb[1, 1] = (255, 0, 0)  # luminance 76: known
  rgb[2, 2] = (0, 255, 0)  # luminance 150: hole
  rgb[3, 3] = (100, 150, 250)  # luminance 146: hole
  want = np.ones((6, 7), np.float32)
  want[0, 0] = want[2, 2] = want[3, 3] = 0
  np.testing.assert_array_equal(masks.load_mask_png(_png(tmp_path, rgb))[..., 0], want)
  rgba = np.concatenate([rgb, np.full((6, 7, 1), 255, np.uint8)], -1)
  np.testing.assert_array_equal(masks.load_mask_png(_png(tmp_path, rgba, 'rgba.png'))[..., 0],
                                want)


def test_load_mask_png_16_bit(tmp_path):
  gray = np.zeros((5, 6), np.uint16)
  gray[1:3, 2:4] = 65535
  gray[4, 5] = 40000  # 155.6 on the 8-bit scale: hole
  got = masks.load_mask_png(_png(tmp_path, gray))
  np.testing.assert_array_equal(got[..., 0], (gray <= 127.5 * 257).astype(np.float32))


def test_load_mask_png_nearest_resize(tmp_path):
  gray = np.zeros((4, 5), np.uint8)
  gray[1, 2] = gray[3, 0] = 255
  path = _png(tmp_path, gray)
  up = masks.load_mask_png(path, 8, 15)  # x2 rows, x3 columns: each pixel a 2 x 3 block
  np.testing.assert_array_equal(up[..., 0], np.kron(gray <= 127, np.ones((2, 3))))
  rng = np.random.default_rng(2)
  gray = np.where(rng.uniform(size=(30, 20)) < 0.3, 255, 0).astype(np.uint8)
  down = masks.load_mask_png(_png(tmp_path, gray, 'big.png'), 10, 5)  # 3 x 4 blocks
  np.testing.assert_array_equal(down[..., 0], (gray[1::3, 2::4] <= 127).astype(np.float32))
  np.testing.assert_array_equal(masks.load_mask_png(path, 4, 5), masks.load_mask_png(path))


def test_load_mask_png_errors(tmp_path):
  gray = np.zeros((4, 5), np.uint8)
  gray[0, 0] = 255
  path = _png(tmp_path, gray)
  with pytest.raises(ValueError, match='does not exist'):
    masks.load_mask_png(tmp_path / 'nope.png')
  bad = tmp_path / 'bad.png'
  bad.write_text('not an image')
  with pytest.raises(ValueError, match='bad.png'):
    masks.load_mask_png(bad)
  with pytest.raises(ValueError, match=r'4x5.*8x8'):
    masks.load_mask_png(path, 8, 8, resize=False)
  with pytest.raises(ValueError, match='both height and width'):
    masks.load_mask_png(path, 8)
  with pytest.raises(ValueError, match=r'black\.png.*no hole'):
    masks.load_mask_png(_png(tmp_path, np.zeros((4, 5), np.uint8), 'black.png'))
  with pytest.raises(ValueError, match=r'white\.png.*all hole'):
    masks.load_mask_png(_png(tmp_path, np.full((4, 5), 200, np.uint8), 'white.png'))


# ----------------------------------------------------------------------------------------
# Config.


def test_mask_kinds_and_default_config():
  assert set(masks.MASK_KINDS) == {'centre', 'boxes', 'lines', 'free_form', 'lama_thin',
                                   'lama_medium', 'lama_thick', 'file'}
  c = masks.default_config()
  assert c.kind in masks.MASK_KINDS
  assert (c.min_hole_ratio, c.max_hole_ratio, c.path) == (0.0, 1.0, '')
  masks.validate_config(c, 28, 28)  # defaults work even for MNIST


def test_make_mask_fn_centre_and_boxes_follow_config():
  key = jax.random.key(0)
  m = masks.make_mask_fn(_config('centre'), 28, 28)(key, 3)  # size 0: half side
  np.testing.assert_array_equal(np.asarray(m), np.asarray(masks.centre_square(3, 28, 28, 14)))
  m = masks.make_mask_fn({'kind': 'centre', 'size': 8}, 32, 32)(key, 2)  # plain dicts too
  np.testing.assert_array_equal(np.asarray(m), np.asarray(masks.centre_square(2, 32, 32, 8)))
  fn = masks.make_mask_fn(_config('boxes', num_boxes=1, box_size=3, box_max_size=6), 20, 24)
  holes = _holes(jax.jit(fn, static_argnums=1)(key, 64))
  heights, widths = holes.any(2).sum(1), holes.any(1).sum(1)
  np.testing.assert_array_equal(holes.sum(axis=(1, 2)), heights * widths)  # one box each
  assert set(heights) == set(widths) == {3, 4, 5, 6}


def test_make_mask_fn_file(tmp_path):
  gray = np.zeros((8, 6), np.uint8)
  gray[2:4, 1:5] = 255
  path = _png(tmp_path, gray)
  fn = masks.make_mask_fn(_config('file', path=str(path)), 16, 12)
  gray.fill(0)
  Image.fromarray(gray).save(path)  # loaded once: later edits do not matter
  m = np.asarray(jax.jit(fn, static_argnums=1)(jax.random.key(0), 3))
  want = np.ones((16, 12), np.float32)
  want[4:8, 2:10] = 0
  assert m.shape == (3, 16, 12, 1)
  np.testing.assert_array_equal(m, np.broadcast_to(want[None, ..., None], m.shape))


def test_lama_user_range_is_capped(monkeypatch):
  c = _config('lama_thick', min_hole_ratio=0.0, max_hole_ratio=0.9, num_candidates=3)
  seen = {}
  orig = masks.constrain_hole_ratio

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return orig(*args, **kwargs)

  monkeypatch.setattr(masks, 'constrain_hole_ratio', spy)
  fn = masks.make_mask_fn(c, 8, 8)
  jax.eval_shape(lambda key: fn(key, 1), jax.random.key(0))  # traces, compiles nothing
  assert seen['max_ratio'] == 0.5 and seen['num_candidates'] == 5


@pytest.mark.parametrize('overrides,height,width,match', [
    (dict(kind='circles'), 32, 32, r'Unknown mask\.kind.*lama_thin'),
    (dict(kind='boxes', box_size=75), 64, 64, r'box_size.*<= 64'),
    (dict(kind='boxes', box_size=10, box_max_size=5), 64, 64, 'box_max_size'),
    (dict(kind='boxes', num_boxes=0), 64, 64, 'num_boxes'),
    (dict(kind='centre', size=40), 32, 32, r'mask\.size in \[1, 32\]'),
    (dict(kind='centre', size=8, min_hole_ratio=0.2), 32, 32, 'fixed hole ratio'),
    (dict(kind='free_form', min_hole_ratio=0.5, max_hole_ratio=0.2), 32, 32, 'exceeds'),
    (dict(kind='free_form', max_hole_ratio=1.5), 32, 32, r'\[0, 1\]'),
    (dict(kind='free_form', min_vertices=5, max_vertices=2), 32, 32, 'swap'),
    (dict(kind='lines', line_min_width=-1.0), 32, 32, 'line_min_width'),
    (dict(kind='lama_thick', min_hole_ratio=0.6), 32, 32, 'lama_max_hole_ratio'),
    (dict(kind='lama_thick', scale=1.0), 40, 40, 'too small'),
    (dict(kind='file'), 32, 32, r'mask\.path'),
    (dict(kind='file', path='/nonexistent/m.png'), 32, 32, r'm\.png.*does not exist'),
    (dict(kind='boxes', boxsize=3), 32, 32, r"Unknown mask config key 'boxsize'"),
])
def test_validate_config_errors(overrides, height, width, match):
  c = {k: v for k, v in overrides.items()}
  with pytest.raises(ValueError, match=match):
    masks.validate_config(c, height, width)
  with pytest.raises(ValueError, match=match):
    masks.make_mask_fn(c, height, width)


def test_generator_argument_errors():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='centre size'):
    masks.centre_square(1, 16, 16, 17)
  with pytest.raises(ValueError, match='box_size'):
    masks.random_boxes(key, 1, 16, 32, box_size=20)
  with pytest.raises(ValueError, match='box_size'):
    masks.random_boxes(key, 1, 16, 16, box_size=(8, 4))
  with pytest.raises(ValueError, match='num_strokes'):
    masks.free_form(key, 1, 16, 16, num_strokes=(0, 2))
  with pytest.raises(ValueError, match='lama kind'):
    masks.lama(key, 1, 16, 16, kind='huge')
  with pytest.raises(ValueError, match='batch'):
    masks.random_lines(key, 0, 16, 16)


def test_uniform_helpers_distributions():
  u = jax.random.uniform(jax.random.key(7), (2, 200_000))
  ints = np.asarray(masks._to_int(u[0], 3, 9))
  assert ints.min() == 3 and ints.max() == 9
  np.testing.assert_allclose(np.bincount(ints - 3) / ints.size, np.full(7, 1 / 7), atol=0.005)
  normal = np.asarray(masks._to_normal(u[0], u[1]), np.float64)
  assert np.isfinite(normal).all()
  assert stats.kstest(normal, 'norm').pvalue > 1e-3
