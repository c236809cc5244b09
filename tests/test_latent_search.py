"""Semantic inpainting by latent search: importance weights, the optimisation, blending."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint import latent_search as ls
from jaxpaint.models import dcgan

# rbg keys: threefry sampling takes seconds to compile on a loaded CPU.
_KEY = functools.partial(jax.random.key, impl="rbg")


def _random_masks(rng, batch, height, width):
  """Binary [B, H, W, 1] masks: a random box (often on a border) plus scattered holes."""
  masks = np.ones((batch, height, width, 1), np.float64)
  for b in range(batch):
    h, w = rng.integers(2, height // 2 + 1), rng.integers(2, width // 2 + 1)
    top = rng.choice([0, height - h, rng.integers(0, height - h + 1)])
    left = rng.choice([0, width - w, rng.integers(0, width - w + 1)])
    masks[b, top:top + h, left:left + w] = 0
    masks[b][rng.random((height, width, 1)) < 0.05] = 0
  return masks


def _importance_weights_np(masks, window):
  """The paper's W_i = sum_{j in N(i)} (1 - M_j) / |N(i)| (M_i = 1), else 0, as a loop."""
  b_, h_, w_, _ = masks.shape
  r = window // 2
  out = np.zeros_like(masks, np.float64)
  for b in range(b_):
    for i in range(h_):
      for j in range(w_):
        if masks[b, i, j, 0] == 0:
          continue
        nbhd = masks[b, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1, 0]
        out[b, i, j, 0] = np.sum(1.0 - nbhd) / nbhd.size
  return out


@pytest.mark.parametrize("window", [7, 3])
def test_importance_weights_match_numpy_loop(window):
  rng = np.random.default_rng(window)
  masks = _random_masks(rng, 4, 13, 11)
  got = np.asarray(ls.importance_weights(jnp.asarray(masks, jnp.float32), window))
  want = _importance_weights_np(masks, window)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert np.all(got[masks == 0] == 0)
  assert got.min() >= 0 and got.max() <= 1
  assert np.any(got > 0) and np.any((got > 0) & (got < 1))


def test_importance_weights_hand_values_and_errors():
  masks = np.ones((1, 5, 5, 1), np.float32)
  masks[0, 0, 0] = 0  # a corner hole
  w = np.asarray(ls.importance_weights(jnp.asarray(masks), 3))[0, ..., 0]
  # (0, 1): 2x3 in-image window with one hole; (1, 1): full 3x3 window with one hole.
  assert w[0, 1] == pytest.approx(1 / 6) and w[1, 1] == pytest.approx(1 / 9)
  assert w[0, 0] == 0 and w[2, 2] == 0
  np.testing.assert_array_equal(ls.importance_weights(jnp.ones((2, 4, 4, 1)), 7), 0.0)
  with pytest.raises(ValueError, match="odd"):
    ls.importance_weights(jnp.asarray(masks), 4)
  with pytest.raises(ValueError, match=r"\[B, H, W, 1\]"):
    ls.importance_weights(jnp.ones((1, 5, 5, 3)), 3)


def test_perceptual_losses_match_formulas():
  logits = np.random.default_rng(0).normal(size=7) * 3
  np.testing.assert_allclose(ls.lsgan_perceptual(jnp.asarray(logits), c=1.0),
                             0.5 * (logits - 1.0) ** 2, rtol=1e-5)
  d = 1.0 / (1.0 + np.exp(-logits))
  np.testing.assert_allclose(ls.vanilla_perceptual(jnp.asarray(logits)), np.log(1.0 - d),
                             rtol=1e-5, atol=1e-6)


# A fixed small "generator" G(z) = tanh(z A + b) and linear "discriminator" D(x) = <x, v>.
_B, _H, _W, _C, _D, _K = 3, 8, 8, 2, 6, 4
_PRNG = np.random.default_rng(42)
_A = _PRNG.normal(size=(_D, _H * _W * _C)) / np.sqrt(_D)
_BIAS = _PRNG.normal(size=(_H * _W * _C,)) * 0.1
_V = _PRNG.normal(size=(_H * _W * _C,)) / np.sqrt(_H * _W * _C)


def _gen_np(z):
  return np.tanh(z @ _A + _BIAS).reshape(-1, _H, _W, _C)


def _gen(z):
  return jnp.tanh(z @ jnp.asarray(_A, jnp.float32) + jnp.asarray(_BIAS, jnp.float32)).reshape(
      -1, _H, _W, _C)


def _disc(x):
  return x.reshape(x.shape[0], -1) @ jnp.asarray(_V, jnp.float32)


@functools.partial(jax.jit, static_argnames=("optimizer", "window", "num_steps"))
def _search(images, masks, rng, lam, learning_rate, clip, optimizer="adam", window=7,
            num_steps=150):
  return ls.latent_search(
      _gen, _disc, images, masks, rng, num_candidates=_K, num_steps=num_steps,
      learning_rate=learning_rate, lam=lam, perceptual_fn=ls.lsgan_perceptual, latent_dim=_D,
      optimizer=optimizer, clip=clip, window=window)


def _problem(z_scale=0.8, seed=0):
  rng = np.random.default_rng(seed)
  z_true = rng.uniform(-z_scale, z_scale, (_B, _D))
  images = _gen_np(z_true)
  masks = _random_masks(rng, _B, _H, _W)
  return z_true, images, masks


def _total_losses_np(z, images, masks, lam, window):
  """Per-candidate loss of z [B, K, D] in float64, from the formula."""
  weights = masks if window is None else _importance_weights_np(masks, window)
  g = _gen_np(z.reshape(-1, _D).astype(np.float64)).reshape((_B, _K, _H, _W, _C))
  contextual = np.abs(weights[:, None] * (g - images[:, None])).sum(axis=(2, 3, 4))
  perceptual = 0.5 * (g.reshape(_B, _K, -1) @ _V) ** 2
  return contextual + lam * perceptual


@pytest.mark.parametrize("window", [7, None])
def test_search_converges_and_selects_the_argmin(window):
  _, images, masks = _problem()
  lam = 0.05
  out = _search(jnp.asarray(images, jnp.float32), jnp.asarray(masks, jnp.float32), _KEY(0),
                lam, 0.05, 1.0, window=window)
  out = jax.tree_util.tree_map(np.asarray, out)
  assert out["loss_history"].shape == (150,)
  assert out["contextual_history"][-1] < 0.05 * out["contextual_history"][0]
  assert out["loss_history"][-1] < 0.1 * out["loss_history"][0]
  # z stays in the box throughout.
  assert np.all(out["z_abs_max_history"] <= 1.0) and np.all(np.abs(out["z_candidates"]) <= 1.0)
  # Recomputed per-candidate losses, then the selection, against NumPy.
  want = _total_losses_np(out["z_candidates"], images, masks, lam, window)
  np.testing.assert_allclose(out["losses"], want, rtol=2e-4, atol=1e-4)
  best = np.argmin(want, axis=1)
  np.testing.assert_array_equal(np.argmin(out["losses"], axis=1), best)
  np.testing.assert_array_equal(out["z_best"], out["z_candidates"][np.arange(_B), best])
  np.testing.assert_allclose(out["loss_best"], want[np.arange(_B), best], rtol=2e-4, atol=1e-4)
  np.testing.assert_allclose(out["loss_best"],
                             out["contextual_best"] + lam * out["perceptual_best"], rtol=1e-5)
  g_best = _gen_np(out["z_best"].astype(np.float64))
  np.testing.assert_allclose(out["completion_raw"], g_best, atol=1e-5)
  np.testing.assert_allclose(out["blended"], masks * images + (1 - masks) * g_best, atol=1e-5)


def test_search_is_deterministic_and_ignores_hole_pixels():
  _, images, masks = _problem(seed=1)
  args = (jnp.asarray(images, jnp.float32), jnp.asarray(masks, jnp.float32))
  first = _search(*args, _KEY(3), 0.05, 0.05, 1.0)
  again = _search(*args, _KEY(3), 0.05, 0.05, 1.0)
  other = _search(*args, _KEY(4), 0.05, 0.05, 1.0)
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.allclose(first["z_candidates"], other["z_candidates"])
  noisy = np.where(masks == 0, np.random.default_rng(0).uniform(-1, 1, images.shape), images)
  hole_noise = _search(jnp.asarray(noisy, jnp.float32), args[1], _KEY(3), 0.05, 0.05, 1.0)
  for name in first:
    np.testing.assert_allclose(first[name], hole_noise[name], atol=1e-6, err_msg=name)


def test_lam_trades_contextual_for_perceptual():
  _, images, masks = _problem(seed=2)
  args = (jnp.asarray(images, jnp.float32), jnp.asarray(masks, jnp.float32), _KEY(5))
  plain = _search(*args, 0.0, 0.05, 1.0)
  weighted = _search(*args, 20.0, 0.05, 1.0)
  assert not np.allclose(plain["z_best"], weighted["z_best"], atol=1e-3)
  np.testing.assert_allclose(plain["loss_best"], plain["contextual_best"], rtol=1e-6)
  assert np.mean(weighted["perceptual_best"]) < np.mean(plain["perceptual_best"])
  assert np.mean(weighted["contextual_best"]) > np.mean(plain["contextual_best"])


def test_nesterov_converges_and_clip_bounds_z():
  # The target's latent lies partly outside [-1, 1], so the box constraint is active.
  _, images, masks = _problem(z_scale=1.6, seed=3)
  args = (jnp.asarray(images, jnp.float32), jnp.asarray(masks, jnp.float32), _KEY(6), 0.01, 0.01)
  out = _search(*args, 1.0, optimizer="nesterov", window=None)
  assert out["loss_history"][-1] < 0.3 * out["loss_history"][0]
  assert np.max(out["z_abs_max_history"]) == 1.0  # the clip was hit ...
  assert np.max(np.abs(out["z_candidates"])) == 1.0  # ... and holds at the end
  looser = _search(*args, 2.0, optimizer="nesterov", window=None)
  assert 1.0 < np.max(looser["z_abs_max_history"]) <= 2.0


def test_bad_arguments_raise():
  images, masks = jnp.zeros((1, 8, 8, 2)), jnp.ones((1, 8, 8, 1))
  kwargs = dict(num_candidates=2, num_steps=1, learning_rate=0.1, lam=0.0,
                perceptual_fn=ls.lsgan_perceptual, latent_dim=_D)
  with pytest.raises(ValueError, match="'adam' or 'nesterov'"):
    ls.latent_search(_gen, _disc, images, masks, _KEY(0), optimizer="sgd", **kwargs)
  with pytest.raises(ValueError, match="num_candidates"):
    ls.latent_search(_gen, _disc, images, masks, _KEY(0), **{**kwargs, "num_candidates": 0})
  with pytest.raises(ValueError, match="matching masks"):
    ls.latent_search(_gen, _disc, jnp.zeros((1, 4, 4, 2)), masks, _KEY(0), **kwargs)


def test_search_with_dcgan_models_in_eval_mode():
  """The intended wiring: closures over frozen Flax variables, G and D in eval mode."""
  gen_model = dcgan.Generator(latent_dim=8, image_size=8, channels=3, base_features=8)
  disc_model = dcgan.Discriminator(base_features=4, num_layers=2)
  z_true = jnp.asarray(np.random.default_rng(0).uniform(-0.7, 0.7, (2, 8)), jnp.float32)
  g_vars = jax.jit(gen_model.init, static_argnames="train")(_KEY(1), z_true, train=False)
  images = jax.jit(lambda v, z: gen_model.apply(v, z, train=False))(g_vars, z_true)
  d_vars = jax.jit(disc_model.init, static_argnames="train")(_KEY(2), images, train=False)
  masks = jnp.ones((2, 8, 8, 1)).at[:, 2:6, 2:6].set(0.0)

  @jax.jit
  def inpaint(g_vars, d_vars, images, masks, rng):
    return ls.latent_search(
        lambda z: gen_model.apply(g_vars, z, train=False),
        lambda x: disc_model.apply(d_vars, x, train=False),
        images, masks, rng, num_candidates=3, num_steps=40, learning_rate=0.05, lam=0.1,
        perceptual_fn=ls.vanilla_perceptual, latent_dim=8)

  out = inpaint(g_vars, d_vars, images, masks, _KEY(3))
  assert out["z_best"].shape == (2, 8) and out["blended"].shape == (2, 8, 8, 3)
  assert out["contextual_history"][-1] < 0.5 * out["contextual_history"][0]
  assert np.all(np.asarray(out["z_abs_max_history"]) <= 1.0)
  np.testing.assert_allclose(out["completion_raw"],
                             gen_model.apply(g_vars, out["z_best"], train=False), atol=1e-5)


def _poisson_np(images, generated, masks):
  """Direct float64 solve of the discrete Poisson equation in the hole (4-neighbours)."""
  b_, h_, w_, c_ = images.shape
  out = masks * images + (1 - masks) * generated
  for b in range(b_):
    holes = [(i, j) for i in range(h_) for j in range(w_) if masks[b, i, j, 0] == 0]
    index = {p: n for n, p in enumerate(holes)}
    mat = np.zeros((len(holes), len(holes)))
    rhs = np.zeros((len(holes), c_))
    for (i, j), n in index.items():
      for q in [(i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)]:
        if not (0 <= q[0] < h_ and 0 <= q[1] < w_):
          continue
        mat[n, n] += 1
        rhs[n] += generated[b, i, j] - generated[b, q[0], q[1]]
        if q in index:
          mat[n, index[q]] -= 1
        else:
          rhs[n] += images[b, q[0], q[1]]
    solution = np.linalg.solve(mat, rhs)
    for (i, j), n in index.items():
      out[b, i, j] = solution[n]
  return out


def test_poisson_blend_matches_direct_solve_and_shifts_colours():
  rng = np.random.default_rng(7)
  images = rng.uniform(-1, 1, (2, 9, 8, 3))
  generated = rng.uniform(-1, 1, (2, 9, 8, 3))
  masks = np.ones((2, 9, 8, 1))
  masks[0, 3:6, 2:5] = 0
  masks[1, 0:3, 5:8] = 0  # touches two borders
  masks[1, 6, 1] = 0
  blend = jax.jit(ls.poisson_blend, static_argnames="num_iters")
  f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
  got = blend(f32(images), f32(generated), f32(masks), num_iters=300)
  np.testing.assert_allclose(got, _poisson_np(images, generated, masks), atol=1e-4)
  # Known pixels are untouched; a constant colour offset between y and G is absorbed.
  np.testing.assert_allclose(np.asarray(got) * masks, images * masks, atol=1e-6)
  shifted = blend(f32(generated + 0.25), f32(generated), f32(masks), num_iters=300)
  np.testing.assert_allclose(shifted, generated + 0.25, atol=1e-4)
