"""PartialConv against a float64 NumPy transcription of NVIDIA's PartialConv2d formula."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.layers import PartialConv, concat_with_masks

EPS = 1e-8


def same_pads(size, k, s, d):
  """TensorFlow 'SAME' pads written from the definition: out = ceil(size / s)."""
  out = -(-size // s)
  total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
  return (total // 2, total - total // 2)


def ref_partial_conv(x, mask, kernel, bias, stride, pads, dilation):
  """NVIDIA PartialConv2d in float64 with explicit window loops.

  x [B, H, W, Ci]; mask [B, H, W, 1] (single-channel mode) or [B, H, W, Ci] (multi);
  kernel [kh, kw, Ci, Co]; returns (out [B, Ho, Wo, Co], update_mask [B, Ho, Wo, 1]).
  """
  x, mask, kernel = (np.asarray(a, np.float64) for a in (x, mask, kernel))
  b, h, w, ci = x.shape
  kh, kw, _, co = kernel.shape
  (pt, pb), (pl, pr) = pads
  multi = mask.shape[-1] > 1
  slide = kh * kw * (ci if multi else 1)
  ho = (h + pt + pb - (kh - 1) * dilation - 1) // stride + 1
  wo = (w + pl + pr - (kw - 1) * dilation - 1) // stride + 1
  out = np.zeros((b, ho, wo, co))
  upd = np.zeros((b, ho, wo, 1))
  xm = x * mask
  for n in range(b):
    for i in range(ho):
      for j in range(wo):
        raw = 0.0 if bias is None else np.asarray(bias, np.float64).copy()
        msum = 0.0
        for a in range(kh):
          for c in range(kw):
            r, q = i * stride - pt + a * dilation, j * stride - pl + c * dilation
            if 0 <= r < h and 0 <= q < w:  # zero padding contributes nothing
              raw = raw + xm[n, r, q] @ kernel[a, c]
              msum += mask[n, r, q].sum()
        ratio = slide / (msum + EPS)
        u = min(max(msum, 0.0), 1.0)
        ratio *= u
        if bias is None:
          o = raw * ratio
        else:
          o = (raw - bias) * ratio + bias
        out[n, i, j] = o * u
        upd[n, i, j] = u
  return out, upd


def make_params(k, ci, co, seed, bias=True):
  """Random kernel/bias (NumPy, so no init compiles); kernel scaled like lecun_normal."""
  rng = np.random.default_rng(seed)
  k = (k, k) if isinstance(k, int) else k
  params = {"kernel": (rng.standard_normal((*k, ci, co)) / np.sqrt(k[0] * k[1] * ci)).astype(np.float32)}
  if bias:
    params["bias"] = rng.standard_normal(co).astype(np.float32)
  return {"params": params}


def normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def random_mask(seed, shape):
  """0/1 mask with scattered holes plus one large hole (windows with no valid pixel)."""
  m = (np.random.default_rng(seed).uniform(size=shape) > 0.35).astype(np.float32)
  m[:, 1:8, 2:9] = 0.0
  return m


CASES = [  # kernel, stride, padding, dilation, mode, bias
    (3, 1, "SAME", 1, "single", True),
    (3, 2, "SAME", 1, "multi", False),
    (3, 2, 1, 2, "single", True),
    (3, 1, "SAME", 2, "multi", False),
    (5, 1, ((2, 2), (1, 3)), 1, "single", False),
    (5, 2, 2, 2, "multi", True),
    (5, 2, "SAME", 1, "single", True),
    (7, 1, "VALID", 1, "single", True),
    (7, 2, "SAME", 2, "multi", True),
    (7, 2, (3, 3), 1, "multi", True),
]


@pytest.mark.parametrize("k,stride,padding,dilation,mode,bias", CASES)
def test_matches_nvidia_formula(k, stride, padding, dilation, mode, bias):
  seed = k * 100 + stride * 10 + dilation
  ci, co, size = 3, 4, 11
  x = normal(seed, (2, size, size, ci))
  mask = random_mask(seed + 1, (2, size, size, 1 if mode == "single" else ci))
  layer = PartialConv(co, k, strides=stride, padding=padding, kernel_dilation=dilation, use_bias=bias)
  variables = make_params(k, ci, co, seed=seed + 2, bias=bias)
  y, new_mask = layer.apply(variables, x, mask)

  if padding == "SAME":
    pads = (same_pads(size, k, stride, dilation),) * 2
  elif padding == "VALID":
    pads = ((0, 0), (0, 0))
  elif isinstance(padding, int):
    pads = ((padding, padding),) * 2
  elif isinstance(padding[0], int):
    pads = ((padding[0],) * 2, (padding[1],) * 2)
  else:
    pads = padding
  params = variables["params"]
  want, want_mask = ref_partial_conv(x, mask, params["kernel"], params["bias"] if bias else None,
                                     stride, pads, dilation)
  assert y.shape == want.shape and new_mask.shape == want_mask.shape
  assert new_mask.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(new_mask), want_mask)
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(y)[want_mask[..., 0] == 0], 0.0)


def test_check_values_all_ones_mask():
  """All-ones mask, 3x3, pad 1: ratio 1 inside, 1.5 on edges, 2.25 at corners."""
  x = normal(0, (1, 5, 5, 2))
  layer = PartialConv(3, 3, padding=1, use_bias=False)
  variables = make_params(3, 2, 3, seed=1, bias=False)
  y, new_mask = layer.apply(variables, x, np.ones((1, 5, 5, 1), np.float32))
  plain = nn.Conv(3, (3, 3), padding=1, use_bias=False).apply(variables, x)
  expected = np.ones((5, 5))
  expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1.5
  expected[0, 0] = expected[0, -1] = expected[-1, 0] = expected[-1, -1] = 2.25
  np.testing.assert_allclose(np.asarray(y), np.asarray(plain) * expected[None, :, :, None], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(new_mask), 1.0)
  # mask=None means all valid, as in NVIDIA.
  y_none, _ = layer.apply(variables, x, None)
  np.testing.assert_allclose(np.asarray(y_none), np.asarray(y), rtol=1e-6)


def test_params_like_nn_conv_and_equal_without_holes():
  x = normal(2, (2, 8, 8, 3))
  layer = PartialConv(5, (3, 3), padding="VALID")
  shapes = jax.eval_shape(layer.init, jax.random.key(3), x, None)
  conv_shapes = jax.eval_shape(nn.Conv(5, (3, 3), padding="VALID").init, jax.random.key(3), x)
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, conv_shapes)
  variables = make_params(3, 3, 5, seed=3)
  y, _ = layer.apply(variables, x, np.ones((2, 8, 8, 1), np.float32))
  plain = nn.Conv(5, (3, 3), padding="VALID").apply(variables, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(plain), rtol=1e-5, atol=1e-5)


def test_empty_windows_are_exactly_zero_even_with_bias():
  x = normal(4, (1, 11, 11, 2))
  mask = np.ones((1, 11, 11, 1), np.float32)
  mask[:, 2:9, 2:9] = 0.0
  layer = PartialConv(4, 3)
  variables = make_params(3, 2, 4, seed=5)
  variables["params"]["bias"] = np.full(4, 0.7, np.float32)
  y, new_mask = layer.apply(variables, x, mask)
  empty = np.zeros((11, 11), bool)
  empty[3:8, 3:8] = True  # 3x3 windows lying entirely inside the hole
  np.testing.assert_array_equal(np.asarray(new_mask)[0, ..., 0], (~empty).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(y)[0][empty], 0.0)
  assert np.all(np.asarray(y)[0][~empty] != 0.0)


def test_grouped_equals_multichannel_and_naive_equals_fast():
  a = normal(60, (2, 10, 10, 2))
  b = normal(61, (2, 10, 10, 3))
  ma = random_mask(62, (2, 10, 10, 1))
  mb = (np.random.default_rng(63).uniform(size=(2, 10, 10, 1)) > 0.5).astype(np.float32)
  x, groups = concat_with_masks([a, b], [ma, mb])
  full = np.concatenate([np.repeat(ma, 2, -1), np.repeat(mb, 3, -1)], axis=-1)
  layer = PartialConv(6, 3, strides=2)
  variables = make_params(3, 5, 6, seed=6)
  y_groups, m_groups = layer.apply(variables, x, groups)
  y_multi, m_multi = layer.apply(variables, x, full)
  np.testing.assert_allclose(np.asarray(y_groups), np.asarray(y_multi), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(m_groups), np.asarray(m_multi))
  # Grouped semantics differ from single-channel mode on either mask alone.
  assert not np.allclose(np.asarray(y_groups), np.asarray(layer.apply(variables, x, ma)[0]))

  naive = PartialConv(6, 3, strides=2, mask_update="naive")
  for mask in (groups, full, ma):
    y_fast, m_fast = layer.apply(variables, x, mask)
    y_naive, m_naive = naive.apply(variables, x, mask)
    np.testing.assert_allclose(np.asarray(y_naive), np.asarray(y_fast), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(m_naive), np.asarray(m_fast))


def test_gradients_reach_x_and_kernel_but_not_mask():
  x = normal(7, (1, 9, 9, 2))
  mask = random_mask(8, (1, 9, 9, 1))
  layer = PartialConv(3, 3)
  params = make_params(3, 2, 3, seed=9)["params"]

  def f(params, x, mask):
    y, new_mask = layer.apply({"params": params}, x, mask)
    return jnp.sum(y ** 2) + jnp.sum(new_mask)

  g_params, g_x, g_mask = jax.grad(f, argnums=(0, 1, 2))(params, x, mask)
  assert np.abs(np.asarray(g_params["kernel"])).sum() > 0
  assert np.abs(np.asarray(g_x)).sum() > 0
  np.testing.assert_array_equal(np.asarray(g_x)[mask[..., 0] == 0], 0.0)  # holes are ignored
  np.testing.assert_array_equal(np.asarray(g_mask), 0.0)
  g_groups = jax.grad(lambda m: f(params, x, [(m, 2)]))(mask)
  np.testing.assert_array_equal(np.asarray(g_groups), 0.0)


def test_bfloat16_close_to_float32():
  x = normal(10, (2, 12, 12, 8))
  mask = random_mask(11, (2, 12, 12, 1))
  variables = make_params(5, 8, 8, seed=12)
  y32, m32 = PartialConv(8, 5).apply(variables, x, mask)
  y16, m16 = PartialConv(8, 5, dtype=jnp.bfloat16).apply(variables, x, mask)
  assert y16.dtype == jnp.bfloat16 and m16.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(y16, np.float32)))
  np.testing.assert_array_equal(np.asarray(m16), np.asarray(m32))
  scale = np.abs(np.asarray(y32)).max()
  np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.03 * scale)


def test_bad_masks_raise():
  x = np.zeros((1, 6, 6, 3), np.float32)
  layer = PartialConv(2, 3)
  variables = make_params(3, 3, 2, seed=0)
  with pytest.raises(ValueError, match="does not fit"):
    layer.apply(variables, x, np.ones((1, 6, 6, 2), np.float32))
  with pytest.raises(ValueError, match="sum to 4"):
    layer.apply(variables, x, [(np.ones((1, 6, 6, 1)), 1), (np.ones((1, 6, 6, 1)), 3)])
  with pytest.raises(ValueError, match="mask_update"):
    PartialConv(2, 3, mask_update="slow").apply(variables, x, None)
