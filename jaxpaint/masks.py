"""Inpainting masks: float32 [B, H, W, 1], 1 = known pixel, 0 = hole.

Random generators are pure functions of a PRNG key with static shapes, so a train step
draws its masks on device inside its jit. Each example gets its own key
(``jax.random.split(key, batch)``) and shapes are rasterised as distance fields over the
pixel grid: a stroke segment from ``a`` to ``b`` of width ``w`` covers pixel ``p`` (pixel
centres at integer coordinates) when ``dist(p, [a, b]) <= w / 2``. That gives round caps,
hence round joints between consecutive segments, as OpenCV's thick lines and DeepFill's
vertex discs do. Random counts (strokes, vertices, boxes) are drawn up to a static
maximum and the unused slots are switched off.

Stroke lengths and widths are given in pixels of a 256 x 256 image, where the reference
generators were tuned, and multiplied by ``scale`` (default ``sqrt(H * W) / 256``) so
that small images get proportionate masks. Widths never go below 1 px.

User masks (:func:`load_mask_png`) follow IOPaint/lama-cleaner: white = hole.

:func:`make_mask_fn` builds the generator that ``config.mask`` (see
:func:`default_config`) names; :func:`validate_config` checks that config up front.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

MaskFn = Callable[[jax.Array, int], jax.Array]
Range = int | float | Sequence[int | float]

MASK_KINDS = ('centre', 'boxes', 'lines', 'free_form', 'lama_thin', 'lama_medium',
              'lama_thick', 'file')
_DETERMINISTIC_KINDS = ('centre', 'file')


# ----------------------------------------------------------------------------------------
# Argument checks, shared by the generators (trace time) and validate_config.


def _as_range(value: Range, name: str) -> tuple[Any, Any]:
  """A scalar or a (min, max) pair -> (min, max)."""
  if isinstance(value, (int, float, np.integer, np.floating)):
    return value, value
  try:
    lo, hi = value
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a number or a (min, max) pair, got {value!r}') from None
  return lo, hi


def _check_range(lo, hi, name: str, low: float, high: float | None = None) -> None:
  """Checks low <= lo <= hi (<= high)."""
  if lo > hi:
    raise ValueError(f'{name}: the minimum {lo} exceeds the maximum {hi}; swap them.')
  if lo < low:
    raise ValueError(f'{name}: {lo} is below {low}; use values >= {low}.')
  if high is not None and hi > high:
    raise ValueError(f'{name}: {hi} is above {high}; use values <= {high}.')


def _check_int_range(lo, hi, name: str, low: int, high: int | None = None) -> None:
  for v in (lo, hi):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
      raise ValueError(f'{name} must be integers, got {v!r}.')
  _check_range(lo, hi, name, low, high)


def _check_image(height: int, width: int) -> None:
  if height < 1 or width < 1:
    raise ValueError(f'Image size must be positive, got {height}x{width} (HxW).')


def _check_batch(batch: int) -> None:
  if not isinstance(batch, (int, np.integer)) or batch < 1:
    raise ValueError(f'batch must be a positive Python int (static), got {batch!r}.')


def _resolve_scale(height: int, width: int, scale: float | None) -> float:
  if scale is None or scale == 0:
    return math.sqrt(height * width) / 256.0
  if scale < 0:
    raise ValueError(f'scale must be positive (or None/0 for sqrt(H*W)/256), got {scale}.')
  return float(scale)


def _check_ratio_bounds(min_ratio: float, max_ratio: float, num_candidates: int,
                        prefix: str = '') -> None:
  if not 0.0 <= min_ratio <= 1.0 or not 0.0 <= max_ratio <= 1.0:
    raise ValueError(f'{prefix}min_ratio/{prefix}max_ratio must lie in [0, 1], got '
                     f'{min_ratio}, {max_ratio}.')
  if min_ratio > max_ratio:
    raise ValueError(f'{prefix}min_ratio={min_ratio} exceeds {prefix}max_ratio={max_ratio}; '
                     'lower the minimum or raise the maximum.')
  if not isinstance(num_candidates, (int, np.integer)) or num_candidates < 1:
    raise ValueError(f'num_candidates must be an int >= 1, got {num_candidates!r}.')


# ----------------------------------------------------------------------------------------
# Rasterisation.


def _grid(height: int, width: int) -> tuple[jax.Array, jax.Array]:
  """Pixel-centre coordinates: y [H, 1], x [1, W]."""
  return (jnp.arange(height, dtype=jnp.float32)[:, None],
          jnp.arange(width, dtype=jnp.float32)[None, :])


def _capsules(a: jax.Array, b: jax.Array, widths: jax.Array, valid: jax.Array, height: int,
              width: int) -> jax.Array:
  """Union of thick segments with round caps -> bool [H, W] (True = covered).

  Args:
    a, b: [S, 2] segment end points as (y, x) pixel coordinates.
    widths: [S] stroke widths in pixels.
    valid: [S] bool, which segments to draw.
  """
  yy, xx = _grid(height, width)

  # A scan keeps one [H, W] field live instead of [S, H, W]; under vmap each iteration
  # covers the whole batch, and on CPU it is also several times faster than a reduction.
  def draw(covered, seg):
    (ay, ax), (by, bx), w, v = seg
    dy, dx = by - ay, bx - ax
    py, px = yy - ay, xx - ax
    t = jnp.clip((py * dy + px * dx) / jnp.maximum(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    ey, ex = py - t * dy, px - t * dx
    return covered | (v & (ey * ey + ex * ex <= 0.25 * w * w)), None

  covered, _ = jax.lax.scan(draw, jnp.zeros((height, width), bool),
                            ((a[:, 0], a[:, 1]), (b[:, 0], b[:, 1]), widths, valid))
  return covered


def _rectangles(top: jax.Array, left: jax.Array, box_h: jax.Array, box_w: jax.Array,
                valid: jax.Array, height: int, width: int) -> jax.Array:
  """Union of axis-aligned boxes [top, top + box_h) x [left, left + box_w) -> bool [H, W].

  All arguments are [N] (integer-valued) arrays; ``valid`` [N] bool.
  """
  yy = jnp.arange(height)[None, :, None]
  xx = jnp.arange(width)[None, None, :]
  col = lambda v: v[:, None, None]
  inside = ((yy >= col(top)) & (yy < col(top + box_h)) & (xx >= col(left)) &
            (xx < col(left + box_w)) & col(valid))
  return jnp.any(inside, axis=0)


def _known(hole: jax.Array) -> jax.Array:
  """bool hole [..., H, W] -> float32 mask [..., H, W, 1], 1 = known."""
  return jnp.logical_not(hole).astype(jnp.float32)[..., None]


def _per_example(draw_hole: Callable[[jax.Array], jax.Array], key: jax.Array,
                 batch: int) -> jax.Array:
  """vmaps ``draw_hole(key) -> bool [H, W]`` over ``batch`` keys -> masks [B, H, W, 1]."""
  _check_batch(batch)
  return _known(jax.vmap(draw_hole)(jax.random.split(key, batch)))


def _uniforms(key: jax.Array, *shapes: tuple[int, ...]) -> list[jax.Array]:
  """One U[0, 1) draw cut into arrays of ``shapes``.

  XLA compile time grows with the number of (vmapped) threefry calls, several-fold for a
  generator's dozen draws, so each example makes one call.
  """
  sizes = [math.prod(shape) for shape in shapes]
  flat = jax.random.uniform(key, (sum(sizes),))
  return [part.reshape(shape)
          for part, shape in zip(jnp.split(flat, np.cumsum(sizes)[:-1].tolist()), shapes)]


def _to_int(u: jax.Array, lo, hi) -> jax.Array:
  """u ~ U[0, 1) -> integers uniform in [lo, hi], both inclusive (bounds may be arrays)."""
  return jnp.minimum(lo + jnp.floor(u * (hi - lo + 1)).astype(jnp.int32), hi)


def _to_normal(u1: jax.Array, u2: jax.Array) -> jax.Array:
  """Two independent U[0, 1) -> N(0, 1) (Box-Muller)."""
  return jnp.sqrt(-2.0 * jnp.log1p(-u1)) * jnp.cos(2.0 * math.pi * u2)


# ----------------------------------------------------------------------------------------
# Generators.


def centre_square(batch: int, height: int, width: int, size: int) -> jax.Array:
  """A size x size hole at the centre, rows/cols [h // 2 - size // 2, ... + size).

  For 64 x 64 and size 32 this is [16:48]^2 (Yeh et al.); 28 x 28, size 8: [10:18]^2.

  Returns:
    float32 [B, H, W, 1].
  """
  _check_batch(batch)
  _check_image(height, width)
  if not isinstance(size, (int, np.integer)) or not 1 <= size <= min(height, width):
    raise ValueError(f'centre size must be an int in [1, {min(height, width)}] for a '
                     f'{height}x{width} image, got {size!r}.')
  top, left = height // 2 - size // 2, width // 2 - size // 2
  known = np.ones((height, width, 1), np.float32)  # static: a constant under jit
  known[top:top + size, left:left + size] = 0.0
  return jnp.broadcast_to(jnp.asarray(known), (batch, height, width, 1))


def random_boxes(key: jax.Array, batch: int, height: int, width: int, num_boxes: int = 2,
                 box_size: Range = 75) -> jax.Array:
  """``num_boxes`` axis-aligned boxes at uniform positions fully inside the image.

  Boxes may overlap (seed 000: two 75 x 75 boxes in 256 x 256).

  Args:
    key: PRNG key.
    box_size: side length, or (min, max): then each box's height and width are drawn
      independently and uniformly from the integers in [min, max].

  Returns:
    float32 [B, H, W, 1].
  """
  _check_image(height, width)
  lo, hi = _as_range(box_size, 'box_size')
  _check_int_range(lo, hi, 'box_size', 1, min(height, width))
  if not isinstance(num_boxes, (int, np.integer)) or num_boxes < 1:
    raise ValueError(f'num_boxes must be an int >= 1, got {num_boxes!r}.')

  def draw(k):
    uh, uw, ut, ul = _uniforms(k, *[(num_boxes,)] * 4)
    box_h, box_w = _to_int(uh, lo, hi), _to_int(uw, lo, hi)
    top, left = _to_int(ut, 0, height - box_h), _to_int(ul, 0, width - box_w)
    return _rectangles(top, left, box_h, box_w, jnp.ones(num_boxes, bool), height, width)

  return _per_example(draw, key, batch)


def random_lines(key: jax.Array, batch: int, height: int, width: int,
                 num_lines: Range = (1, 20), line_width: Range = (3.0, 15.0),
                 scale: float | None = None) -> jax.Array:
  """Thick straight lines between uniform random points (seed 001, partial convolutions).

  The defaults follow the common PConv-Keras generator: 1-20 lines of thickness 3 to
  0.03 * (H + W) at 256 x 256.

  Args:
    key: PRNG key.
    num_lines: count, or (min, max) integers, drawn uniformly per example.
    line_width: width in 256-px units, or (min, max), drawn uniformly per line.
    scale: multiplier for widths; None = sqrt(H * W) / 256.

  Returns:
    float32 [B, H, W, 1].
  """
  _check_image(height, width)
  n_lo, n_hi = _as_range(num_lines, 'num_lines')
  _check_int_range(n_lo, n_hi, 'num_lines', 1)
  w_lo, w_hi = _as_range(line_width, 'line_width')
  _check_range(w_lo, w_hi, 'line_width', 0.0)
  s = _resolve_scale(height, width, scale)
  extent = jnp.asarray([height - 1, width - 1], jnp.float32)

  def draw(k):
    un, ua, ub, uw = _uniforms(k, (), (n_hi, 2), (n_hi, 2), (n_hi,))
    n = _to_int(un, n_lo, n_hi)
    w = jnp.maximum((w_lo + (w_hi - w_lo) * uw) * s, 1.0)
    return _capsules(ua * extent, ub * extent, w, jnp.arange(n_hi) < n, height, width)

  return _per_example(draw, key, batch)


def free_form(key: jax.Array, batch: int, height: int, width: int,
              num_strokes: Range = (1, 3), num_vertices: Range = (4, 11),
              stroke_width: Range = (12.0, 40.0), mean_angle: float = 2 * math.pi / 5,
              angle_range: float = 2 * math.pi / 15, scale: float | None = None) -> jax.Array:
  """DeepFill v2 free-form brush strokes (Yu et al. 2019).

  Each stroke starts at a uniform pixel and takes ``num_vertices`` steps of length
  ~ N(R, R / 2) clipped to [0, 2R], R = diagonal / 8, at angles that alternate around
  ``mean_angle`` (zig-zag), clipping every vertex to the image; width is drawn once per
  stroke; joints are round. The mask is then flipped left-right and up-down with
  probability 1/2 each.

  Args:
    key: PRNG key.
    num_strokes, num_vertices: counts or (min, max) integers (inclusive).
    stroke_width: width in 256-px units, or (min, max); scaled by ``scale``.
    mean_angle, angle_range: radians; per stroke, angles are uniform in
      [mean - U(0, range), mean + U(0, range)].
    scale: multiplier for widths; None = sqrt(H * W) / 256. Step lengths already scale
      with the diagonal.

  Returns:
    float32 [B, H, W, 1].
  """
  _check_image(height, width)
  s_lo, s_hi = _as_range(num_strokes, 'num_strokes')
  _check_int_range(s_lo, s_hi, 'num_strokes', 1)
  v_lo, v_hi = _as_range(num_vertices, 'num_vertices')
  _check_int_range(v_lo, v_hi, 'num_vertices', 1)
  w_lo, w_hi = _as_range(stroke_width, 'stroke_width')
  _check_range(w_lo, w_hi, 'stroke_width', 0.0)
  s = _resolve_scale(height, width, scale)
  radius = math.sqrt(height * height + width * width) / 8
  hi_yx = jnp.asarray([height - 1, width - 1], jnp.float32)

  def draw(k):
    (u_strokes, u_vertices, u_spread, u_angle, u_step1, u_step2, u_start, u_width,
     u_flip) = _uniforms(k, (), (s_hi,), (2, s_hi, 1), (s_hi, v_hi), (s_hi, v_hi),
                         (s_hi, v_hi), (s_hi, 2), (s_hi,), (2,))
    n_strokes = _to_int(u_strokes, s_lo, s_hi)
    n_vertices = _to_int(u_vertices, v_lo, v_hi)
    lo_angle = mean_angle - angle_range * u_spread[0]
    hi_angle = mean_angle + angle_range * u_spread[1]
    angles = lo_angle + (hi_angle - lo_angle) * u_angle
    angles = jnp.where(jnp.arange(v_hi) % 2 == 0, 2 * math.pi - angles, angles)
    steps = jnp.clip(radius + radius / 2 * _to_normal(u_step1, u_step2), 0, 2 * radius)
    start = jnp.floor(u_start * (hi_yx + 1))
    moves = steps[..., None] * jnp.stack([jnp.sin(angles), jnp.cos(angles)], -1)

    def walk(p, move):  # clipping makes each vertex depend on the previous one
      q = jnp.clip(p + move, 0.0, hi_yx)
      return q, q

    _, ends = jax.lax.scan(walk, start, jnp.swapaxes(moves, 0, 1))  # [V, S, 2]
    ends = jnp.swapaxes(ends, 0, 1)  # [S, V, 2]
    starts = jnp.concatenate([start[:, None], ends[:, :-1]], axis=1)
    widths = jnp.floor(w_lo + (w_hi - w_lo) * u_width)
    widths = jnp.broadcast_to(jnp.maximum(widths * s, 1.0)[:, None], (s_hi, v_hi))
    valid = ((jnp.arange(s_hi) < n_strokes)[:, None] &
             (jnp.arange(v_hi)[None, :] < n_vertices[:, None]))
    hole = _capsules(starts.reshape(-1, 2), ends.reshape(-1, 2), widths.reshape(-1),
                     valid.reshape(-1), height, width)
    hole = jnp.where(u_flip[0] < 0.5, hole[:, ::-1], hole)
    return jnp.where(u_flip[1] < 0.5, hole[::-1, :], hole)

  return _per_example(draw, key, batch)


# LaMa's evaluation masks (advimman/lama configs/data_gen/random_{thin,medium,thick}_256),
# in 256-px units.
@dataclasses.dataclass(frozen=True)
class _LamaPreset:
  min_strokes: int
  max_strokes: int
  max_width: int
  max_len: int
  max_angle: int = 4
  box_proba: float = 0.0  # relative to the strokes' weight 1
  box_margin: int = 0
  box_min_size: int = 0
  box_max_size: int = 0
  min_boxes: int = 0
  max_boxes: int = 0


_LAMA_PRESETS = {
    'thin': _LamaPreset(min_strokes=4, max_strokes=50, max_width=10, max_len=40),
    'medium': _LamaPreset(min_strokes=4, max_strokes=5, max_width=50, max_len=100,
                          box_proba=0.3, box_margin=0, box_min_size=10, box_max_size=50,
                          min_boxes=1, max_boxes=5),
    'thick': _LamaPreset(min_strokes=1, max_strokes=5, max_width=100, max_len=200,
                         box_proba=0.3, box_margin=10, box_min_size=30, box_max_size=150,
                         min_boxes=1, max_boxes=3),
}
_LAMA_SEGMENTS_PER_STROKE = 5


def _lama_box_bounds(p: _LamaPreset, height: int, width: int, s: float) -> tuple[int, int, int]:
  """Scaled (margin, min side, max side exclusive) as LaMa's rectangle generator uses them."""
  margin = int(round(p.box_margin * s))
  lo = max(1, int(round(p.box_min_size * s)))
  hi = min(int(round(p.box_max_size * s)), height - 2 * margin, width - 2 * margin)
  if hi <= lo:
    raise ValueError(f'A {height}x{width} image is too small for LaMa boxes of '
                     f'{p.box_min_size}-{p.box_max_size} px at scale {s:.3g}; use a larger '
                     'image or a larger scale.')
  return margin, lo, hi


def _lama_raw(key: jax.Array, batch: int, height: int, width: int, kind: str = 'thin',
              scale: float | None = None) -> jax.Array:
  """One LaMa draw per example, before rejecting large holes -> [B, H, W, 1]."""
  _check_image(height, width)
  if kind not in _LAMA_PRESETS:
    raise ValueError(f'lama kind must be one of {tuple(_LAMA_PRESETS)}, got {kind!r}.')
  p = _LAMA_PRESETS[kind]
  s = _resolve_scale(height, width, scale)
  n_seg = _LAMA_SEGMENTS_PER_STROKE
  hi_yx = jnp.asarray([height - 1, width - 1], jnp.float32)
  use_boxes = p.box_proba > 0
  if use_boxes:
    margin, b_lo, b_hi = _lama_box_bounds(p, height, width, s)

  stroke_shapes = ((), (p.max_strokes,), (p.max_strokes, 2)) + ((p.max_strokes, n_seg),) * 3

  def strokes(u_strokes, u_segments, u_start, u_angle, u_length, u_width):
    n_strokes = _to_int(u_strokes, p.min_strokes, p.max_strokes)
    n_segments = _to_int(u_segments, 1, n_seg)
    start = jnp.floor(u_start * (hi_yx + 1))
    # LaMa draws integer angles (radians) and mirrors them on every other stroke.
    angles = 0.01 + _to_int(u_angle, 0, p.max_angle - 1)
    angles = jnp.where((jnp.arange(p.max_strokes) % 2 == 0)[:, None], 2 * math.pi - angles,
                       angles)
    lengths = (10 + _to_int(u_length, 0, p.max_len - 1)) * s
    widths = (5 + _to_int(u_width, 0, p.max_width - 1)) * s
    # (y, x) += length * (cos, sin) as in LaMa, truncated to whole pixels.
    moves = lengths[..., None] * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)

    def walk(q, move):
      q = jnp.clip(jnp.floor(q + move), 0.0, hi_yx)
      return q, q

    _, ends = jax.lax.scan(walk, start, jnp.swapaxes(moves, 0, 1))
    ends = jnp.swapaxes(ends, 0, 1)  # [S, n_seg, 2]
    starts = jnp.concatenate([start[:, None], ends[:, :-1]], axis=1)
    valid = ((jnp.arange(p.max_strokes) < n_strokes)[:, None] &
             (jnp.arange(n_seg)[None, :] < n_segments[:, None]))
    return _capsules(starts.reshape(-1, 2), ends.reshape(-1, 2),
                     jnp.maximum(widths, 1.0).reshape(-1), valid.reshape(-1), height, width)

  box_shapes = ((), (p.max_boxes,), (p.max_boxes,), (p.max_boxes,), (p.max_boxes,))

  def boxes(u_boxes, uh, uw, ut, ul):
    n = _to_int(u_boxes, p.min_boxes, p.max_boxes)
    box_h, box_w = _to_int(uh, b_lo, b_hi - 1), _to_int(uw, b_lo, b_hi - 1)
    top = _to_int(ut, margin, height - margin - box_h)
    left = _to_int(ul, margin, width - margin - box_w)
    return _rectangles(top, left, box_h, box_w, jnp.arange(p.max_boxes) < n, height, width)

  def draw(k):
    u = _uniforms(k, *stroke_shapes, *(((),) + box_shapes if use_boxes else ()))
    hole = strokes(*u[:len(stroke_shapes)])
    if use_boxes:  # LaMa's MixedMaskGenerator: one generator per mask, by weight
      u_choice, *u_boxes = u[len(stroke_shapes):]
      hole = jnp.where(u_choice < p.box_proba / (1.0 + p.box_proba), boxes(*u_boxes), hole)
    return hole

  return _per_example(draw, key, batch)


def lama(key: jax.Array, batch: int, height: int, width: int, kind: str = 'thin',
         num_candidates: int = 5, max_hole_ratio: float = 0.5,
         scale: float | None = None) -> jax.Array:
  """LaMa's evaluation masks (Suvorov et al. 2022), 'thin', 'medium' or 'thick'.

  Per mask LaMa picks strokes (weight 1) or boxes (weight ``box_proba``, 0.3 for medium
  and thick, none for thin), i.e. boxes with probability 0.3 / 1.3:

  * strokes: ``min..max`` strokes from uniform start pixels, each of 1-5 segments;
    per segment an integer angle in {0, 1, 2, 3} + 0.01 rad (mirrored on even strokes),
    length 10 + U{0..max_len-1} and width 5 + U{0..max_width-1}; thin: 4-50 strokes,
    max_width 10, max_len 40; medium: 4-5, 50, 100; thick: 1-5, 100, 200.
  * boxes: medium 1-5 boxes with sides in [10, 50), margin 0; thick 1-3 boxes with
    sides in [30, 150), 10 px from the border.

  LaMa generated 5 variants per image and dropped those with more than half the image
  as hole. With static shapes we draw ``num_candidates`` masks per example and keep the
  first whose hole ratio is <= ``max_hole_ratio`` (the closest one if none is): the same
  distribution as a uniform pick among the accepted variants, since they are i.i.d.
  Lengths, widths and box sizes are in 256-px units, scaled by ``scale`` (None =
  sqrt(H * W) / 256).

  Returns:
    float32 [B, H, W, 1].
  """
  return constrain_hole_ratio(_lama_raw, key, batch, height, width, kind=kind, scale=scale,
                              min_ratio=0.0, max_ratio=max_hole_ratio,
                              num_candidates=num_candidates)


def hole_ratio(masks: jax.Array) -> jax.Array:
  """Fraction of hole pixels per mask: [B, H, W, 1] -> [B]."""
  if masks.ndim != 4:
    raise ValueError(f'masks must be [B, H, W, 1], got shape {masks.shape}.')
  return 1.0 - jnp.mean(masks, axis=(1, 2, 3))


def constrain_hole_ratio(generator: Callable[..., jax.Array], key: jax.Array, batch: int,
                         *args: Any, min_ratio: float, max_ratio: float,
                         num_candidates: int = 8, **kwargs: Any) -> jax.Array:
  """Masks whose hole ratio lies in [min_ratio, max_ratio], with static shapes.

  Calls ``generator(key, batch * num_candidates, *args, **kwargs)`` once, i.e. draws
  ``num_candidates`` i.i.d. candidates per example, and keeps each example's first
  candidate in range, or the one closest to the range if none is (so the result is
  always a valid mask, though then outside the range).

  Returns:
    float32 [B, H, W, 1].
  """
  _check_batch(batch)
  _check_ratio_bounds(min_ratio, max_ratio, num_candidates)
  masks = generator(key, batch * num_candidates, *args, **kwargs)
  masks = masks.reshape((num_candidates, batch) + masks.shape[1:])
  ratios = jax.vmap(hole_ratio)(masks)  # [K, B]
  miss = jnp.maximum(min_ratio - ratios, 0.0) + jnp.maximum(ratios - max_ratio, 0.0)
  pick = jnp.argmin(miss, axis=0)  # ties (all in range: 0) -> the first
  return masks[pick, jnp.arange(batch)]


# ----------------------------------------------------------------------------------------
# User masks.


def _gray(image) -> np.ndarray:
  """PIL image -> float32 [H, W] on a 0-255 scale (luminance for colour images)."""
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):  # 16-bit PNGs
    return np.asarray(image, dtype=np.float32) / 257.0
  if image.mode == 'F':
    return np.asarray(image, dtype=np.float32)
  return np.asarray(image.convert('L'), dtype=np.float32)  # ITU-R 601 luma


def load_mask_png(path: str | os.PathLike, height: int | None = None,
                  width: int | None = None, resize: bool = True) -> np.ndarray:
  """Reads a user mask: white = hole (IOPaint/lama-cleaner convention).

  Grayscale, or RGB(A)/palette converted to luminance (alpha is ignored); pixels with
  luminance > 127.5 are holes.

  Args:
    path: image file (PNG or anything Pillow reads).
    height, width: target size, both or neither. A file of another size is resized with
      nearest neighbour when ``resize``, else rejected.

  Returns:
    float32 [H, W, 1] host array, 1 = known, 0 = hole.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top

  path = os.fspath(path)
  if (height is None) != (width is None):
    raise ValueError(f'Give both height and width for mask {path!r}, or neither.')
  if not os.path.isfile(path):
    raise ValueError(f'Mask file {path!r} does not exist; check mask.path.')
  try:
    with Image.open(path) as image:
      image.load()
      gray = _gray(image)
  except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for unreadable files
    raise ValueError(f'Cannot read mask file {path!r} as an image: {e}') from e
  if gray.ndim != 2:
    raise ValueError(f'Mask file {path!r} decodes to shape {gray.shape}, not a 2-D image.')

  if height is not None and gray.shape != (height, width):
    if not resize:
      raise ValueError(f'Mask {path!r} is {gray.shape[0]}x{gray.shape[1]} (HxW) but the '
                       f'images are {height}x{width}; save the mask at that size or '
                       'allow resizing (resize=True / mask.resize=True).')
    _check_image(height, width)
    rows = np.minimum(((np.arange(height) + 0.5) * gray.shape[0] / height).astype(int),
                      gray.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * gray.shape[1] / width).astype(int),
                      gray.shape[1] - 1)
    gray = gray[rows[:, None], cols[None, :]]

  known = (gray <= 127.5).astype(np.float32)
  if known.min() == 1.0:
    raise ValueError(f'Mask {path!r} has no hole: no pixel is brighter than 127.5 '
                     '(white = hole); paint the region to fill in white.')
  if known.max() == 0.0:
    raise ValueError(f'Mask {path!r} is all hole: every pixel is brighter than 127.5 '
                     '(white = hole); paint the pixels to keep in black.')
  return known[..., None]


# ----------------------------------------------------------------------------------------
# Config.


def default_config() -> ml_collections.ConfigDict:
  """``config.mask``: every key any generator reads. Lengths/widths in 256-px units."""
  c = ml_collections.ConfigDict()
  c.kind = 'centre'  # one of MASK_KINDS
  c.size = 0  # centre: side of the square hole; 0 = half the shorter image side
  c.num_boxes = 2  # boxes
  c.box_size = 75  # boxes: side length in pixels (not scaled)...
  c.box_max_size = 0  # ...or, if > 0, sides uniform in [box_size, box_max_size]
  c.min_lines = 1  # lines
  c.max_lines = 20
  c.line_min_width = 3.0
  c.line_max_width = 15.0
  c.min_strokes = 1  # free_form
  c.max_strokes = 3
  c.min_vertices = 4
  c.max_vertices = 11
  c.stroke_min_width = 12.0
  c.stroke_max_width = 40.0
  c.scale = 0.0  # lines/free_form/lama size multiplier; 0 = sqrt(H * W) / 256
  c.lama_candidates = 5  # lama_*: draws per example to reject holes over...
  c.lama_max_hole_ratio = 0.5  # ...this fraction (LaMa's max_tamper_area)
  c.min_hole_ratio = 0.0  # keep masks whose hole fraction lies in [min, max]...
  c.max_hole_ratio = 1.0
  c.num_candidates = 8  # ...choosing among this many draws per example
  c.path = ''  # file: user mask PNG, white = hole
  c.resize = True  # file: nearest-resize a mask of another size (else an error)
  return c


def _resolve(mask_config: Mapping[str, Any] | ml_collections.ConfigDict
            ) -> ml_collections.ConfigDict:
  """Defaults overridden by ``mask_config``; unknown keys are errors (typos)."""
  c = default_config()
  for k, v in mask_config.items():
    if k not in c:
      raise ValueError(f'Unknown mask config key {k!r}; valid keys: {sorted(c.keys())}.')
    try:
      setattr(c, k, v)
    except (TypeError, ValueError) as e:
      raise ValueError(f'mask.{k}={v!r} has the wrong type: {e}') from e
  return c


def _centre_size(c: ml_collections.ConfigDict, height: int, width: int) -> int:
  return c.size if c.size else min(height, width) // 2


def _box_range(c: ml_collections.ConfigDict) -> Range:
  return (c.box_size, c.box_max_size) if c.box_max_size > 0 else c.box_size


def _scale_arg(c: ml_collections.ConfigDict) -> float | None:
  return c.scale if c.scale > 0 else None


def _lama_bounds(c: ml_collections.ConfigDict) -> tuple[float, float, bool]:
  """(min, max) ratio for lama kinds, and whether the user asked for a constraint."""
  user = not (c.min_hole_ratio == 0.0 and c.max_hole_ratio == 1.0)
  return c.min_hole_ratio, min(c.max_hole_ratio, c.lama_max_hole_ratio), user


def validate_config(mask_config: Mapping[str, Any] | ml_collections.ConfigDict, height: int,
                    width: int) -> None:
  """Raises ValueError (saying what to change) if ``config.mask`` cannot make H x W masks.

  Builds nothing on device; for kind 'file' it reads the PNG.
  """
  c = _resolve(mask_config)
  _check_image(height, width)
  if c.kind not in MASK_KINDS:
    raise ValueError(f'Unknown mask.kind {c.kind!r}; valid kinds: {MASK_KINDS}.')
  _check_ratio_bounds(c.min_hole_ratio, c.max_hole_ratio, c.num_candidates, prefix='mask.')
  if c.scale < 0:
    raise ValueError(f'mask.scale must be >= 0 (0 = sqrt(H*W)/256), got {c.scale}.')
  side = min(height, width)

  if c.kind == 'centre':
    size = _centre_size(c, height, width)
    if not 1 <= size <= side:
      raise ValueError(f'mask.size={c.size} does not fit a {height}x{width} image; set '
                       f'mask.size in [1, {side}] (0 = half the shorter side).')
  elif c.kind == 'file':
    if not c.path:
      raise ValueError("mask.kind='file' needs mask.path, a PNG with white = hole.")
  elif c.kind == 'boxes':
    if c.num_boxes < 1:
      raise ValueError(f'mask.num_boxes must be >= 1, got {c.num_boxes}.')
    lo, hi = _as_range(_box_range(c), 'mask.box_size')
    if lo < 1:
      raise ValueError(f'mask.box_size must be >= 1, got {lo}.')
    if c.box_max_size > 0 and hi < lo:
      raise ValueError(f'mask.box_max_size={hi} is below mask.box_size={lo}; raise it, or '
                       'set it to 0 for fixed-size boxes.')
    if hi > side:
      raise ValueError(f'Boxes of {hi} px do not fit a {height}x{width} image; set '
                       f'mask.box_size (and mask.box_max_size) <= {side}.')
  elif c.kind == 'lines':
    _check_int_range(c.min_lines, c.max_lines, 'mask.min_lines/mask.max_lines', 1)
    _check_range(c.line_min_width, c.line_max_width,
                 'mask.line_min_width/mask.line_max_width', 0.0)
  elif c.kind == 'free_form':
    _check_int_range(c.min_strokes, c.max_strokes, 'mask.min_strokes/mask.max_strokes', 1)
    _check_int_range(c.min_vertices, c.max_vertices, 'mask.min_vertices/mask.max_vertices',
                     1)
    _check_range(c.stroke_min_width, c.stroke_max_width,
                 'mask.stroke_min_width/mask.stroke_max_width', 0.0)
  else:  # lama_*
    preset = _LAMA_PRESETS[c.kind[len('lama_'):]]
    if preset.box_proba > 0:
      _lama_box_bounds(preset, height, width, _resolve_scale(height, width, _scale_arg(c)))
    if not 0.0 < c.lama_max_hole_ratio <= 1.0:
      raise ValueError(f'mask.lama_max_hole_ratio must lie in (0, 1], got '
                       f'{c.lama_max_hole_ratio}.')
    if c.lama_candidates < 1:
      raise ValueError(f'mask.lama_candidates must be >= 1, got {c.lama_candidates}.')
    lo, hi, _ = _lama_bounds(c)
    if lo > hi:
      raise ValueError(f'mask.min_hole_ratio={lo} exceeds the LaMa cap '
                       f'mask.lama_max_hole_ratio={c.lama_max_hole_ratio}; lower the '
                       'minimum or raise the cap.')

  if c.kind in _DETERMINISTIC_KINDS:  # a fixed mask cannot be redrawn into range
    if c.kind == 'centre':
      ratio = _centre_size(c, height, width)**2 / (height * width)
    else:
      ratio = 1.0 - float(load_mask_png(c.path, height, width, resize=c.resize).mean())
    if not c.min_hole_ratio <= ratio <= c.max_hole_ratio:
      raise ValueError(f"mask.kind={c.kind!r} gives a fixed hole ratio {ratio:.4f}, outside "
                       f'[mask.min_hole_ratio, mask.max_hole_ratio] = [{c.min_hole_ratio}, '
                       f'{c.max_hole_ratio}]; widen the range or change the mask.')


def make_mask_fn(mask_config: Mapping[str, Any] | ml_collections.ConfigDict, height: int,
                 width: int) -> MaskFn:
  """The generator ``config.mask`` names, as ``mask_fn(key, batch_size) -> [B, H, W, 1]``.

  ``batch_size`` must be a static Python int (mark it static when jitting ``mask_fn``
  directly). Random kinds are redrawn into [min_hole_ratio, max_hole_ratio] by
  :func:`constrain_hole_ratio` unless that range is [0, 1]; for the LaMa kinds the range
  is also capped at ``lama_max_hole_ratio``. 'file' loads the PNG once, here, and every
  example gets that mask.
  """
  validate_config(mask_config, height, width)
  c = _resolve(mask_config)
  kind = c.kind

  if kind == 'centre':
    size = _centre_size(c, height, width)
    return lambda key, batch_size: centre_square(batch_size, height, width, size)
  if kind == 'file':
    fixed = load_mask_png(c.path, height, width, resize=c.resize)

    def file_fn(key: jax.Array, batch_size: int) -> jax.Array:
      del key
      _check_batch(batch_size)
      return jnp.broadcast_to(jnp.asarray(fixed), (batch_size, height, width, 1))

    return file_fn

  scale = _scale_arg(c)
  if kind == 'boxes':
    kwargs = dict(num_boxes=c.num_boxes, box_size=_box_range(c))
    generator = random_boxes
  elif kind == 'lines':
    kwargs = dict(num_lines=(c.min_lines, c.max_lines),
                  line_width=(c.line_min_width, c.line_max_width), scale=scale)
    generator = random_lines
  elif kind == 'free_form':
    kwargs = dict(num_strokes=(c.min_strokes, c.max_strokes),
                  num_vertices=(c.min_vertices, c.max_vertices),
                  stroke_width=(c.stroke_min_width, c.stroke_max_width), scale=scale)
    generator = free_form
  else:  # lama_*: its own rejection and the user's range merge into one constraint
    kwargs = dict(kind=kind[len('lama_'):], scale=scale)
    generator = _lama_raw
    lo, hi, user = _lama_bounds(c)
    num_candidates = max(c.num_candidates, c.lama_candidates) if user else c.lama_candidates
    return lambda key, batch_size: constrain_hole_ratio(
        generator, key, batch_size, height, width, min_ratio=lo, max_ratio=hi,
        num_candidates=num_candidates, **kwargs)

  lo, hi, num_candidates = c.min_hole_ratio, c.max_hole_ratio, c.num_candidates
  if lo == 0.0 and hi == 1.0:
    return lambda key, batch_size: generator(key, batch_size, height, width, **kwargs)
  return lambda key, batch_size: constrain_hole_ratio(
      generator, key, batch_size, height, width, min_ratio=lo, max_ratio=hi,
      num_candidates=num_candidates, **kwargs)
