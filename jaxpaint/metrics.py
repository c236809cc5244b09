"""Per-image quality metrics for inpainting: MSE, MAE, PSNR, SSIM, whole-image and hole-only.

Every metric takes float images [B, H, W, C] in [-1, 1] (``data_range`` 2) and returns one
value per image, [B]; all are pure ``jax.numpy`` and jit-able. Host-side helpers at the end
(:class:`MetricAccumulator`, :func:`bin_by_hole_ratio`) aggregate them over an eval set.

Definitions (chosen so that no metric is ever NaN):

* PSNR is ``10 log10(data_range**2 / mse)`` capped at ``PSNR_MAX_DB`` (100 dB), so identical
  images give 100 dB rather than +inf and means over a batch stay finite. The cap only
  changes images with MSE below ``4e-10`` at range 2, far under 8-bit quantisation noise.
* SSIM follows Wang et al. 2004 exactly as ``skimage.metrics.structural_similarity(...,
  channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
  11-tap Gaussian (sigma 1.5), K1 0.01, K2 0.03, population covariances, filters with
  scipy's 'reflect' border (numpy's 'symmetric'); the map is averaged over channels and over
  the pixels at least 5 away from every border. Those pixels never see the padding.
* Hole-only metrics weight each pixel by ``1 - mask`` (1 = known, 0 = hole). ``hole_mse``
  and ``hole_mae`` average over hole pixels and channels; ``hole_psnr`` is PSNR of
  ``hole_mse``; ``hole_ssim`` averages the full-size SSIM map (border pixels included, as
  skimage's ``full=True`` map, so holes touching the border still count) over hole pixels.
  An image whose mask has no hole is scored on the whole image instead (for ``hole_ssim``:
  the whole-image :func:`ssim`).
"""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DATA_RANGE = 2.0  # images live in [-1, 1]
PSNR_MAX_DB = 100.0

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# scipy's radius for truncate=3.5 (what skimage passes): int(3.5 * 1.5 + 0.5) = 5 -> 11 taps.
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
SSIM_WIN_SIZE = 2 * SSIM_RADIUS + 1

# The partial-convolution paper's evaluation bins of hole ratio, each (lo, hi].
HOLE_RATIO_EDGES = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
# Ratios within this of a bin edge count as equal to it (float32 ratios like 0.1f > 0.1).
_EDGE_TOL = 1e-6
OUTSIDE_BINS = "other"

_AXES = (1, 2, 3)


def _as_float(x) -> jnp.ndarray:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_pair(a, b) -> tuple[jnp.ndarray, jnp.ndarray]:
  a, b = _as_float(a), _as_float(b)
  if a.ndim != 4 or a.shape != b.shape:
    raise ValueError(
        f"Expected two image batches [B, H, W, C] of the same shape; got {a.shape} and {b.shape}."
    )
  return a, b


def _check_masks(images: jnp.ndarray, masks) -> jnp.ndarray:
  masks = _as_float(masks)
  if masks.shape != images.shape[:3] + (1,):
    raise ValueError(
        f"Expected masks [B, H, W, 1] = {images.shape[:3] + (1,)} matching the images; "
        f"got {masks.shape}."
    )
  return masks


# --- Whole-image pixel metrics ----------------------------------------------------------


def mse(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error per image: [B, H, W, C] x2 -> [B]."""
  a, b = _check_pair(a, b)
  return jnp.mean(jnp.square(a - b), axis=_AXES)


def mae(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute error per image: [B, H, W, C] x2 -> [B]."""
  a, b = _check_pair(a, b)
  return jnp.mean(jnp.abs(a - b), axis=_AXES)


def psnr_from_mse(
    mse_values: jnp.ndarray, data_range: float = DATA_RANGE, max_db: float | None = PSNR_MAX_DB
) -> jnp.ndarray:
  """PSNR in dB from MSE; capped at ``max_db`` (None: no cap, MSE 0 -> +inf)."""
  db = 10.0 * jnp.log10(data_range**2 / mse_values)  # mse 0 -> +inf, never NaN
  return db if max_db is None else jnp.minimum(db, max_db)


def psnr(
    a: jnp.ndarray,
    b: jnp.ndarray,
    data_range: float = DATA_RANGE,
    max_db: float | None = PSNR_MAX_DB,
) -> jnp.ndarray:
  """Peak signal-to-noise ratio per image in dB, capped at ``max_db``: [B, H, W, C] x2 -> [B]."""
  return psnr_from_mse(mse(a, b), data_range, max_db)


# --- SSIM -------------------------------------------------------------------------------


def _gaussian_taps() -> np.ndarray:
  """scipy.ndimage's normalised 1-D Gaussian, [SSIM_WIN_SIZE]."""
  x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
  return taps / taps.sum()


def _gaussian_blur(x: jnp.ndarray) -> jnp.ndarray:
  """Separable depthwise Gaussian with 'reflect' borders: [B, H, W, K] -> [B, H, W, K]."""
  r, k = SSIM_RADIUS, x.shape[-1]
  x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")  # = scipy 'reflect'
  taps = jnp.asarray(_gaussian_taps(), x.dtype)
  for kernel_shape in ((SSIM_WIN_SIZE, 1, 1, 1), (1, SSIM_WIN_SIZE, 1, 1)):
    kernel = jnp.tile(taps.reshape(kernel_shape), (1, 1, 1, k))  # HWIO, one filter per channel
    x = jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=k,
        # GPUs would otherwise use TF32 and miss skimage by ~1e-3.
        precision=jax.lax.Precision.HIGHEST,
    )
  return x


def _ssim_map_channels(a: jnp.ndarray, b: jnp.ndarray, data_range: float) -> jnp.ndarray:
  """Per-channel SSIM map, [B, H, W, C] x2 -> [B, H, W, C] (border pixels see padding)."""
  a, b = _check_pair(a, b)
  _, h, w, c = a.shape
  if min(h, w) < SSIM_WIN_SIZE:
    raise ValueError(
        f"SSIM needs images at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} (its Gaussian window); "
        f"got {h}x{w}. Upsample or use MSE/PSNR for smaller images."
    )
  # One blur over the five moments stacked on channels: [B, H, W, 5C].
  moments = _gaussian_blur(jnp.concatenate([a, b, a * a, b * b, a * b], axis=-1))
  mu_a, mu_b, e_aa, e_bb, e_ab = jnp.split(moments, 5, axis=-1)
  var_a = e_aa - mu_a * mu_a
  var_b = e_bb - mu_b * mu_b
  cov = e_ab - mu_a * mu_b
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
  den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
  return num / den


def _crop_mean(ssim_map_values: jnp.ndarray) -> jnp.ndarray:
  """Mean over pixels whose window lies inside the image: [B, H, W] -> [B]."""
  r = SSIM_RADIUS
  return jnp.mean(ssim_map_values[:, r:-r, r:-r], axis=(1, 2))


def ssim_map(a: jnp.ndarray, b: jnp.ndarray, data_range: float = DATA_RANGE) -> jnp.ndarray:
  """Channel-averaged SSIM map, [B, H, W, C] x2 -> [B, H, W].

  Full size, like skimage's ``full=True`` map; the ``SSIM_RADIUS``-pixel border depends on
  the 'reflect' padding and is left out of :func:`ssim`.
  """
  return jnp.mean(_ssim_map_channels(a, b, data_range), axis=-1)


def ssim(a: jnp.ndarray, b: jnp.ndarray, data_range: float = DATA_RANGE) -> jnp.ndarray:
  """Mean SSIM per image (skimage's definition, see module doc): [B, H, W, C] x2 -> [B]."""
  return _crop_mean(ssim_map(a, b, data_range))


def ssim_to_unit_interval(ssim_values: jnp.ndarray) -> jnp.ndarray:
  """(ssim + 1) / 2: the "normalised SSIM" in [0, 1] that seed report 002 quoted."""
  return (ssim_values + 1.0) / 2.0


# --- Hole-only metrics ------------------------------------------------------------------


def hole_ratio(masks: jnp.ndarray) -> jnp.ndarray:
  """Fraction of hole pixels per image: masks [B, H, W, 1] (1 = known) -> [B]."""
  return jnp.mean(1.0 - _as_float(masks), axis=_AXES)


def _hole_weights(masks: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Pixel weights [B, H, W, 1] (1 - mask, or all ones where there is no hole) and has_hole [B]."""
  weights = 1.0 - masks
  has_hole = jnp.sum(weights, axis=_AXES) > 0
  return jnp.where(has_hole[:, None, None, None], weights, 1.0), has_hole


def _weighted_mean(values: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
  """Mean of values [B, H, W, C] over pixels weighted by [B, H, W, 1] and all channels -> [B]."""
  channels = values.shape[-1]
  return jnp.sum(values * weights, axis=_AXES) / (jnp.sum(weights, axis=_AXES) * channels)


def masked_mse(a: jnp.ndarray, b: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
  """MSE over hole pixels (whole image if none): [B, H, W, C] x2, [B, H, W, 1] -> [B]."""
  a, b = _check_pair(a, b)
  weights, _ = _hole_weights(_check_masks(a, masks))
  return _weighted_mean(jnp.square(a - b), weights)


def masked_mae(a: jnp.ndarray, b: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
  """MAE over hole pixels (whole image if none): [B, H, W, C] x2, [B, H, W, 1] -> [B]."""
  a, b = _check_pair(a, b)
  weights, _ = _hole_weights(_check_masks(a, masks))
  return _weighted_mean(jnp.abs(a - b), weights)


def masked_psnr(
    a: jnp.ndarray,
    b: jnp.ndarray,
    masks: jnp.ndarray,
    data_range: float = DATA_RANGE,
    max_db: float | None = PSNR_MAX_DB,
) -> jnp.ndarray:
  """PSNR of :func:`masked_mse`, capped at ``max_db``: [B, H, W, C] x2, [B, H, W, 1] -> [B]."""
  return psnr_from_mse(masked_mse(a, b, masks), data_range, max_db)


def _masked_ssim_from_map(values: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
  """Hole mean of a map [B, H, W] (whole-image SSIM where there is no hole) -> [B]."""
  weights, has_hole = _hole_weights(masks)
  hole_mean = _weighted_mean(values[..., None], weights)
  return jnp.where(has_hole, hole_mean, _crop_mean(values))


def masked_ssim(
    a: jnp.ndarray, b: jnp.ndarray, masks: jnp.ndarray, data_range: float = DATA_RANGE
) -> jnp.ndarray:
  """SSIM map averaged over hole pixels, border included: [B, H, W, C] x2, [B, H, W, 1] -> [B].

  Images without holes get the whole-image :func:`ssim`.
  """
  a, b = _check_pair(a, b)
  return _masked_ssim_from_map(ssim_map(a, b, data_range), _check_masks(a, masks))


def compute_metrics(
    outputs: jnp.ndarray, targets: jnp.ndarray, masks: jnp.ndarray, data_range: float = DATA_RANGE
) -> dict[str, jnp.ndarray]:
  """All per-image metrics of a batch, whole-image and hole-only; jit-able.

  Args:
    outputs: float [B, H, W, C] in [-1, 1], the model's images (raw or composited).
    targets: float [B, H, W, C] in [-1, 1], the clean images.
    masks: float [B, H, W, 1], 1 = known pixel, 0 = hole.
    data_range: max - min of the pixel values.

  Returns:
    [B] arrays under mse, mae, psnr, ssim, hole_mse, hole_mae, hole_psnr, hole_ssim.
  """
  outputs, targets = _check_pair(outputs, targets)
  masks = _check_masks(outputs, masks)
  squared, absolute = jnp.square(outputs - targets), jnp.abs(outputs - targets)
  weights, _ = _hole_weights(masks)
  whole_mse, hole_mse = jnp.mean(squared, axis=_AXES), _weighted_mean(squared, weights)
  map_values = ssim_map(outputs, targets, data_range)  # shared by ssim and hole_ssim
  return {
      "mse": whole_mse,
      "mae": jnp.mean(absolute, axis=_AXES),
      "psnr": psnr_from_mse(whole_mse, data_range),
      "ssim": _crop_mean(map_values),
      "hole_mse": hole_mse,
      "hole_mae": _weighted_mean(absolute, weights),
      "hole_psnr": psnr_from_mse(hole_mse, data_range),
      "hole_ssim": _masked_ssim_from_map(map_values, masks),
  }


# --- Host-side aggregation --------------------------------------------------------------


class MetricAccumulator:
  """Collects per-image metric arrays over eval batches on the host (NumPy).

  Keeps every per-image value (not just sums) so the same run can be binned by hole ratio.
  Pure NumPy rather than clu.metrics, which keeps only totals and would add a dependency.
  """

  def __init__(self):
    self._chunks: dict[str, list[np.ndarray]] = {}

  def add(self, metrics: Mapping[str, jnp.ndarray]) -> None:
    """Adds one batch: a dict of [B] arrays, same keys and B for every entry."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()}
    sizes = {k: v.shape for k, v in arrays.items()}
    if not arrays or any(len(s) != 1 for s in sizes.values()) or len(set(sizes.values())) != 1:
      raise ValueError(f"Expected a non-empty dict of [B] arrays with one B; got shapes {sizes}.")
    if self._chunks and set(arrays) != set(self._chunks):
      raise ValueError(f"Expected keys {sorted(self._chunks)}; got {sorted(arrays)}.")
    for k, v in arrays.items():
      self._chunks.setdefault(k, []).append(v)

  def __len__(self) -> int:
    """Number of images added."""
    return sum(len(c) for c in next(iter(self._chunks.values()), []))

  def values(self) -> dict[str, np.ndarray]:
    """Every per-image value so far, concatenated: dict of [N]."""
    return {k: np.concatenate(v) for k, v in self._chunks.items()}

  def means(self) -> dict[str, float]:
    """Mean over all images added (empty dict before the first :meth:`add`)."""
    return {k: float(np.mean(v)) for k, v in self.values().items()}


def hole_ratio_bins() -> tuple[tuple[float, float], ...]:
  """The partial-conv paper's bins (lo, hi]: (0.01, 0.1], (0.1, 0.2], ..., (0.5, 0.6]."""
  return tuple(zip(HOLE_RATIO_EDGES[:-1], HOLE_RATIO_EDGES[1:]))


def bin_label(lo: float, hi: float) -> str:
  """'(0.01, 0.1]'-style key used by :func:`bin_by_hole_ratio`."""
  return f"({lo:g}, {hi:g}]"


def bin_by_hole_ratio(
    per_image_metrics: Mapping[str, np.ndarray],
    hole_ratios: np.ndarray,
    bins: Sequence[tuple[float, float]] | None = None,
) -> dict[str, dict[str, float]]:
  """Per-bin means and counts of per-image metrics, host-side.

  Args:
    per_image_metrics: dict of [N] arrays (e.g. :meth:`MetricAccumulator.values`).
    hole_ratios: [N] fraction of hole pixels per image (:func:`hole_ratio`).
    bins: (lo, hi] intervals; defaults to :func:`hole_ratio_bins`. Ratios within 1e-6 of an
      edge count as on it, so a float32 0.1 falls in (0.01, 0.1].

  Returns:
    {bin_label(lo, hi): {"count": n, metric: mean, ...}} in bin order, then
    ``OUTSIDE_BINS`` ("other") for images in no bin. Empty groups have ``None`` means
    (null in JSON: strict parsers reject NaN).
  """
  ratios = np.asarray(hole_ratios, dtype=np.float64)
  values = {k: np.asarray(v, dtype=np.float64) for k, v in per_image_metrics.items()}
  if ratios.ndim != 1 or any(v.shape != ratios.shape for v in values.values()):
    raise ValueError(
        f"Expected [N] hole ratios and [N] metric arrays; got {ratios.shape} and "
        f"{ {k: v.shape for k, v in values.items()} }."
    )
  groups = {}
  unbinned = np.ones(ratios.shape, dtype=bool)
  for lo, hi in hole_ratio_bins() if bins is None else bins:
    selected = (ratios > lo + _EDGE_TOL) & (ratios <= hi + _EDGE_TOL)
    unbinned &= ~selected
    groups[bin_label(lo, hi)] = selected
  groups[OUTSIDE_BINS] = unbinned

  def summary(selected: np.ndarray) -> dict[str, float | None]:
    count = int(selected.sum())
    means = {k: float(v[selected].mean()) if count else None for k, v in values.items()}
    return {"count": count, **means}

  return {label: summary(selected) for label, selected in groups.items()}
