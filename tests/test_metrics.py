"""Tests for jaxpaint.metrics against scikit-image and float64 NumPy references."""

import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import ndimage
from skimage import metrics as skm

from jaxpaint import metrics

_SKIMAGE_SSIM = dict(
    channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0
)


def _pair(seed: int, shape: tuple[int, ...], noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
  """Correlated float64 images in [-1, 1]: structured a, b = a + noise (so SSIM is far from 0)."""
  rng = np.random.default_rng(seed)
  u = rng.uniform(-1, 1, shape)
  a = np.clip(3.0 * ndimage.gaussian_filter(u, (0, 1.5, 1.5, 0)) + 0.3 * u, -1, 1)
  b = np.clip(a + rng.normal(0, noise, shape), -1, 1)
  return a, b


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-image skimage SSIM [B] and its channel-averaged full map [B, H, W], in float64."""
  results = [skm.structural_similarity(x, y, full=True, **_SKIMAGE_SSIM) for x, y in zip(a, b)]
  return np.array([r[0] for r in results]), np.stack([r[1].mean(-1) for r in results])


def _f32(*arrays):
  return tuple(np.asarray(x, np.float32) for x in arrays)


@pytest.mark.parametrize("shape", [(3, 16, 16, 1), (2, 12, 20, 3)])
def test_pixel_metrics_match_skimage(shape):
  a, b = _pair(0, shape)
  fn = jax.jit(lambda x, y: (metrics.mse(x, y), metrics.mae(x, y), metrics.psnr(x, y)))
  got_mse, got_mae, got_psnr = fn(*_f32(a, b))
  ref_mse = [skm.mean_squared_error(x, y) for x, y in zip(a, b)]
  ref_mae = np.abs(a - b).mean(axis=(1, 2, 3))
  ref_psnr = [skm.peak_signal_noise_ratio(x, y, data_range=2.0) for x, y in zip(a, b)]
  assert got_mse.shape == got_mae.shape == got_psnr.shape == (shape[0],)
  np.testing.assert_allclose(got_mse, ref_mse, rtol=1e-5)
  np.testing.assert_allclose(got_mae, ref_mae, rtol=1e-5)
  np.testing.assert_allclose(got_psnr, ref_psnr, rtol=1e-5)


@pytest.mark.parametrize(
    "shape",
    [
        (2, 28, 28, 1), (2, 32, 32, 3), (1, 64, 64, 3), (1, 256, 256, 3),
        (2, 40, 23, 2), (1, 11, 11, 1),  # non-square, and the smallest SSIM accepts
    ],
)
def test_ssim_and_map_match_skimage(shape):
  a, b = _pair(1, shape)
  got, got_map = jax.jit(lambda x, y: (metrics.ssim(x, y), metrics.ssim_map(x, y)))(*_f32(a, b))
  ref, ref_map = _skimage_ssim(a, b)
  assert ref.min() > 0.3  # correlated pairs: a wrong window or constant would show
  assert got.shape == (shape[0],) and got_map.shape == shape[:3]
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
  np.testing.assert_allclose(got_map, ref_map, atol=1e-4, rtol=0)  # borders ('reflect') too


def test_ssim_flat_background_and_uncorrelated():
  """MNIST-like images (mostly -1, where float32 variances cancel) and unrelated noise."""
  rng = np.random.default_rng(2)
  a = -np.ones((2, 28, 28, 1))
  a[:, 8:20, 6:22] = rng.uniform(0.0, 1.0, (2, 12, 16, 1))
  b = np.clip(a + rng.normal(0, 0.1, a.shape), -1, 1)
  b[1] = rng.uniform(-1, 1, b.shape[1:])  # second pair unrelated: SSIM near 0
  got = jax.jit(metrics.ssim)(*_f32(a, b))
  ref, _ = _skimage_ssim(a, b)
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def _masks(shape: tuple[int, int, int]) -> np.ndarray:
  """[4, H, W, 1]: a box hole, scattered holes, no hole, a hole only in the 5-px border strip."""
  b, h, w = shape
  assert b == 4
  rng = np.random.default_rng(3)
  m = np.ones((b, h, w, 1))
  m[0, 5:17, 3:12] = 0
  m[1] = (rng.uniform(size=(h, w, 1)) > 0.3).astype(np.float64)
  m[3, :, :2] = 0  # SSIM's cropped mean would never see these
  return m


def test_hole_metrics_match_numpy_reference():
  a, b = _pair(4, (4, 32, 24, 3), noise=0.3)
  masks = _masks((4, 32, 24))
  a32, b32, m32 = _f32(a, b, masks)
  got = jax.jit(metrics.compute_metrics)(a32, b32, m32)
  ref_ssim, ref_map = _skimage_ssim(a, b)
  ref = {k: [] for k in ("hole_mse", "hole_mae", "hole_psnr", "hole_ssim")}
  for i in range(4):
    hole = masks[i, ..., 0] == 0
    if not hole.any():  # documented fallback: score the whole image
      hole = np.ones_like(hole)
    d = a[i][hole] - b[i][hole]  # [n_hole, C]
    ref["hole_mse"].append(np.mean(d**2))
    ref["hole_mae"].append(np.mean(np.abs(d)))
    ref["hole_psnr"].append(10 * np.log10(4.0 / np.mean(d**2)))
    ref["hole_ssim"].append(ref_map[i][hole].mean() if masks[i].min() == 0 else ref_ssim[i])
  for key, values in ref.items():
    np.testing.assert_allclose(got[key], values, rtol=1e-5, atol=1e-5 if key == "hole_ssim" else 0)
  # The four whole-image entries and the standalone hole functions agree with compute_metrics.
  np.testing.assert_allclose(got["ssim"], ref_ssim, atol=1e-4)
  np.testing.assert_allclose(got["mse"], ((a - b) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
  assert sorted(got) == sorted(
      ["mse", "mae", "psnr", "ssim", "hole_mse", "hole_mae", "hole_psnr", "hole_ssim"]
  )
  standalone = jax.jit(
      lambda x, y, m: {
          "hole_mse": metrics.masked_mse(x, y, m),
          "hole_mae": metrics.masked_mae(x, y, m),
          "hole_psnr": metrics.masked_psnr(x, y, m),
          "hole_ssim": metrics.masked_ssim(x, y, m),
      }
  )(a32, b32, m32)
  for key, values in standalone.items():
    np.testing.assert_allclose(values, got[key], rtol=1e-6, atol=1e-7)
  # The hole-only numbers differ from whole-image ones where there is a hole.
  assert not np.isclose(got["hole_ssim"][3], got["ssim"][3], atol=1e-3)
  np.testing.assert_allclose(got["hole_ssim"][2], got["ssim"][2], rtol=1e-6)


def test_identical_images_are_finite():
  a, _ = _pair(5, (2, 16, 16, 3))
  masks = _masks((4, 16, 16))[:2]
  a32, m32 = _f32(a, masks)
  got = jax.jit(metrics.compute_metrics)(a32, a32, m32)
  for key in ("mse", "mae", "hole_mse", "hole_mae"):
    np.testing.assert_array_equal(got[key], 0.0)
  for key in ("psnr", "hole_psnr"):
    np.testing.assert_array_equal(got[key], metrics.PSNR_MAX_DB)
  for key in ("ssim", "hole_ssim"):
    np.testing.assert_allclose(got[key], 1.0, atol=1e-6)
  assert np.isposinf(metrics.psnr(a32, a32, max_db=None)).all()
  acc = metrics.MetricAccumulator()
  acc.add(got)
  assert all(math.isfinite(v) for v in acc.means().values())


def test_psnr_cap_only_applies_above_max_db():
  a = np.zeros((2, 4, 4, 1), np.float32)
  b = a.copy()
  b[0, 0, 0, 0] = 1.0  # mse 1/16 -> 10 log10(4 * 16) = 18.06 dB
  b[1, 0, 0, 0] = 1e-5  # mse 6.25e-12 -> 118 dB, capped
  np.testing.assert_allclose(metrics.psnr(a, b), [10 * np.log10(64.0), 100.0], rtol=1e-6)


def test_hole_ratio_and_binning_hand_built():
  masks = np.ones((3, 10, 10, 1), np.float32)
  masks[0, 0, :] = 0  # 10 of 100 pixels: on the 0.1 edge (float32 gives 0.09999999)
  masks[1, :5, :7] = 0  # 0.35
  # masks[2] has no hole: ratio 0, outside every bin
  ratios = np.asarray(metrics.hole_ratio(masks))
  np.testing.assert_allclose(ratios, [0.1, 0.35, 0.0], rtol=1e-6)
  assert metrics.hole_ratio_bins() == (
      (0.01, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.6)
  )
  # float32(0.1) = 0.10000000149 is above 0.1: the edge tolerance must still put it in bin 1.
  ratios = np.concatenate([ratios, [0.01, 0.05, 0.15, 0.6, 0.61, np.float32(0.1)]])
  psnr = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0])
  result = metrics.bin_by_hole_ratio({"psnr": psnr, "one": np.ones(9)}, ratios)
  assert list(result) == [
      "(0.01, 0.1]", "(0.1, 0.2]", "(0.2, 0.3]", "(0.3, 0.4]", "(0.4, 0.5]", "(0.5, 0.6]", "other"
  ]
  # Both 0.1s and 0.05 -> first bin; 0.01 (open left edge), 0 and 0.61 -> other.
  assert result["(0.01, 0.1]"] == {"count": 3, "psnr": 50.0, "one": 1.0}  # (10 + 50 + 90) / 3
  assert result["(0.1, 0.2]"] == {"count": 1, "psnr": 60.0, "one": 1.0}
  assert result["(0.3, 0.4]"] == {"count": 1, "psnr": 20.0, "one": 1.0}
  assert result["(0.5, 0.6]"] == {"count": 1, "psnr": 70.0, "one": 1.0}
  assert result["other"] == {"count": 3, "psnr": 50.0, "one": 1.0}  # (30 + 40 + 80) / 3
  assert result["(0.2, 0.3]"]["count"] == 0 and result["(0.2, 0.3]"]["psnr"] is None
  assert sum(g["count"] for g in result.values()) == 9
  with pytest.raises(ValueError, match=r"\[N\] hole ratios"):
    metrics.bin_by_hole_ratio({"psnr": psnr[:3]}, ratios)


def test_accumulator_concatenates_batches():
  acc = metrics.MetricAccumulator()
  assert acc.means() == {} and len(acc) == 0
  acc.add({"mse": np.array([1.0, 2.0]), "psnr": np.array([10.0, 20.0])})
  acc.add({"mse": np.array([6.0]), "psnr": np.array([60.0])})
  assert len(acc) == 3
  np.testing.assert_array_equal(acc.values()["mse"], [1.0, 2.0, 6.0])
  assert acc.means() == {"mse": 3.0, "psnr": 30.0}
  with pytest.raises(ValueError, match="Expected keys"):
    acc.add({"mse": np.array([1.0])})
  with pytest.raises(ValueError, match=r"\[B\] arrays with one B"):
    acc.add({"mse": np.array([1.0]), "psnr": np.array([1.0, 2.0])})


def test_ssim_to_unit_interval():
  # Seed 002's "SSIM" 0.8795 is (raw + 1) / 2 with raw 0.759.
  np.testing.assert_allclose(
      metrics.ssim_to_unit_interval(np.array([0.759, -1.0, 1.0])), [0.8795, 0.0, 1.0]
  )


def test_bad_inputs_raise():
  x = np.zeros((2, 16, 16, 3), np.float32)
  with pytest.raises(ValueError, match="same shape"):
    metrics.mse(x, x[:, :8])
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    metrics.psnr(x[0], x[0])
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(x[:, :10], x[:, :10])
  with pytest.raises(ValueError, match=r"masks \[B, H, W, 1\]"):
    metrics.compute_metrics(x, x, np.ones((2, 16, 16, 3), np.float32))


def test_imports_without_tensorflow_or_clu():
  code = (
      "import sys, jaxpaint.metrics; "
      "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'clu') if m in sys.modules]; "
      "assert not bad, bad"
  )
  repo_root = pathlib.Path(__file__).resolve().parents[1]
  subprocess.run(
      [sys.executable, "-c", code],
      check=True,
      cwd=repo_root,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
