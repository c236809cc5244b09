"""Context Encoders: geometry helpers, mean fill, loss vs float64 NumPy, network shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpaint.losses import context_encoder as ce_loss
from jaxpaint.models import context_encoder as ce


def _random(seed, shape, low=-1.0, high=1.0):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# --- reconstruction weights and loss -------------------------------------------------------


@pytest.mark.parametrize("size,overlap", [(64, 4), (16, 4), (32, 0)])
def test_reconstruction_weights_layout(size, overlap):
  w = ce_loss.reconstruction_weights(size, overlap=overlap, overlap_weight=10.0)
  assert w.shape == (size, size, 1)
  inner = size - 2 * overlap
  assert np.sum(w == 1.0) == inner * inner
  assert np.sum(w == 10.0) == size * size - inner * inner
  assert np.all(w[overlap:size - overlap, overlap:size - overlap] == 1.0)
  if overlap:
    # Every ring pixel, on each side, is 10.
    assert np.all(w[:overlap] == 10.0) and np.all(w[-overlap:] == 10.0)
    assert np.all(w[:, :overlap] == 10.0) and np.all(w[:, -overlap:] == 10.0)


def test_reconstruction_weights_paper_counts():
  w = ce_loss.reconstruction_weights(64)  # Pathak: 64x64 patch, 56x56 hole.
  assert np.sum(w == 1.0) == 56 * 56 == 3136
  assert np.sum(w == 10.0) == 4096 - 3136 == 960
  w = ce_loss.reconstruction_weights((8, 12), overlap=2, overlap_weight=3.0)
  assert w.shape == (8, 12, 1) and np.sum(w == 1.0) == 4 * 8 and np.sum(w == 3.0) == 96 - 32


@pytest.mark.parametrize("overlap", [8, -1, 20])
def test_reconstruction_weights_rejects_bad_overlap(overlap):
  with pytest.raises(ValueError, match="overlap"):
    ce_loss.reconstruction_weights(16, overlap=overlap)


def test_context_encoder_loss_matches_numpy():
  pred, true = _random(0, (3, 16, 16, 3)), _random(1, (3, 16, 16, 3))
  weights = ce_loss.reconstruction_weights(16, overlap=4)
  fake_logits = _random(2, (3,), -3, 3)
  # The adversarial term as Pathak computes it: BCE of D(G) against the "real" label.
  adv = jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones(3)))
  loss, terms = ce_loss.context_encoder_loss(pred, true, weights, adv)

  p, t, w = (a.astype(np.float64) for a in (pred, true, weights))
  rec = np.sum(w * (p - t) ** 2) / p.size  # nn.MSECriterion: mean over all elements.
  adv_np = np.mean(np.log1p(np.exp(-fake_logits.astype(np.float64))))  # -log sigmoid(l)
  np.testing.assert_allclose(terms["rec"], rec, rtol=1e-5)
  np.testing.assert_allclose(terms["l2"], np.mean((p - t) ** 2), rtol=1e-5)
  np.testing.assert_allclose(terms["adv"], adv_np, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.999 * rec + 0.001 * adv_np, rtol=1e-5)
  np.testing.assert_allclose(terms["loss"], loss)

  # 'weights' normalisation: a weighted mean over the broadcast weights.
  rec_w = np.sum(w * (p - t) ** 2) / (np.sum(w) * 3 * 3)
  _, terms_w = ce_loss.context_encoder_loss(pred, true, weights, adv, normalization="weights")
  np.testing.assert_allclose(terms_w["rec"], rec_w, rtol=1e-5)
  with pytest.raises(ValueError, match="normalization"):
    ce_loss.context_encoder_loss(pred, true, weights, adv, normalization="pixels")


def test_context_encoder_loss_gradient_is_pathaks():
  # Pathak's generator gradient: wtl2Matrix * dMSE/dpred = rec_weight * w * 2 (p - t) / N.
  pred, true = _random(3, (2, 8, 8, 3)), _random(4, (2, 8, 8, 3))
  weights = ce_loss.reconstruction_weights(8, overlap=2)
  grad = jax.grad(lambda p: ce_loss.context_encoder_loss(p, true, weights, 0.0)[0])(pred)
  expected = 0.999 * weights * 2 * (pred.astype(np.float64) - true) / pred.size
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-9)


# --- geometry and mean fill -----------------------------------------------------------------


def test_centre_hole_masks_crop_paste():
  masks = ce.centre_hole_masks(2, 32, 16, overlap=2)
  assert masks.shape == (2, 32, 32, 1)
  assert float(jnp.sum(1 - masks[0])) == 12 * 12
  assert np.all(np.asarray(masks[0, 10:22, 10:22]) == 0)
  assert float(masks[0, 9, 15, 0]) == 1 and float(masks[0, 22, 15, 0]) == 1

  images = _random(5, (2, 32, 32, 3))
  patch = ce.crop_patch(images, 16)
  np.testing.assert_array_equal(patch, images[:, 8:24, 8:24])
  np.testing.assert_array_equal(ce.paste_patch(images, patch), images)

  new_patch = _random(6, (2, 16, 16, 3))
  out = np.asarray(ce.composite_patch(images, new_patch, masks))
  hole = np.broadcast_to(np.asarray(masks) == 0, out.shape)
  np.testing.assert_array_equal(out[~hole], images[~hole])
  np.testing.assert_array_equal(out[:, 10:22, 10:22], new_patch[:, 2:14, 2:14])


def test_fill_holes_with_mean():
  images = _random(7, (3, 8, 8, 3))
  masks = (np.random.default_rng(8).uniform(size=(3, 8, 8, 1)) > 0.4).astype(np.float32)
  masks[2] = 0.0  # no known pixel: the per-image mean falls back to 0.
  hole = np.broadcast_to(masks == 0, images.shape)

  out = np.asarray(ce.fill_holes_with_mean(images, masks, 0.25))
  np.testing.assert_array_equal(out[~hole], images[~hole])
  assert np.all(out[hole] == 0.25)

  colour = ce.PATHAK_MEAN_COLOUR
  out = np.asarray(ce.fill_holes_with_mean(images, masks, colour))
  for c in range(3):
    np.testing.assert_allclose(out[..., c][hole[..., c]], colour[c], rtol=1e-6)
  np.testing.assert_allclose(colour, (2 * 117 / 255 - 1, 2 * 104 / 255 - 1, 2 * 123 / 255 - 1))

  out = np.asarray(ce.fill_holes_with_mean(images, masks, None))
  for b in range(3):
    known = masks[b, ..., 0] > 0
    want = images[b][known].astype(np.float64).mean(0) if known.any() else np.zeros(3)
    np.testing.assert_allclose(out[b][~known], np.broadcast_to(want, out[b][~known].shape),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[b][known], images[b][known])

  with pytest.raises(ValueError, match="mean_colour"):
    ce.fill_holes_with_mean(images, masks, (0.0, 0.0))


# --- networks -------------------------------------------------------------------------------


def _init_shapes(module, *args):
  return jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), *args, train=False))


def test_context_encoder_paper_shapes_128():
  images = jnp.zeros((2, 128, 128, 3))
  masks = ce.centre_hole_masks(2, 128, 64, overlap=4)
  out, variables = _init_shapes(ce.ContextEncoder(), images, masks)
  assert out.shape == (2, 64, 64, 3)
  params = variables["params"]
  convs = sorted(k for k in params if k.startswith("Conv_"))
  deconvs = sorted(k for k in params if k.startswith("ConvTranspose_"))
  assert [params[k]["kernel"].shape[-1] for k in convs] == [64, 64, 128, 256, 512, 4000]
  assert params["Conv_5"]["kernel"].shape == (4, 4, 512, 4000)  # the 4000-d bottleneck
  assert [params[k]["kernel"].shape[-2:] for k in deconvs] == [
      (4000, 512), (512, 256), (256, 128), (128, 64), (64, 3)]

  logits, d_vars = _init_shapes(ce.ContextDiscriminator(), jnp.zeros((2, 64, 64, 3)))
  assert logits.shape == (2,)
  widths = [d_vars["params"][f"Conv_{i}"]["kernel"].shape[-1] for i in range(5)]
  assert widths == [64, 128, 256, 512, 1]


def test_context_encoder_shapes_64():
  images = jnp.zeros((2, 64, 64, 3))
  masks = ce.centre_hole_masks(2, 64, 32, overlap=2)
  out, variables = _init_shapes(ce.ContextEncoder(patch_size=32, bottleneck=100), images, masks)
  assert out.shape == (2, 32, 32, 3)
  params = variables["params"]
  assert [params[f"Conv_{i}"]["kernel"].shape[-1] for i in range(5)] == [64, 128, 256, 512, 100]
  assert [params[f"ConvTranspose_{i}"]["kernel"].shape[-1] for i in range(4)] == [256, 128, 64, 3]
  logits, _ = _init_shapes(ce.ContextDiscriminator(), jnp.zeros((2, 32, 32, 3)))
  assert logits.shape == (2,)


@pytest.mark.parametrize("image_shape,patch_size,match", [
    ((1, 96, 96, 3), 48, "image size"),
    ((1, 64, 64, 3), 48, "patch_size"),
    ((1, 32, 32, 3), 64, "exceeds"),
    ((1, 64, 32, 3), 16, "square"),
])
def test_context_encoder_rejects_inconsistent_sizes(image_shape, patch_size, match):
  images = jnp.zeros(image_shape)
  masks = jnp.ones(image_shape[:3] + (1,))
  with pytest.raises(ValueError, match=match):
    _init_shapes(ce.ContextEncoder(patch_size=patch_size), images, masks)


def test_geometry_errors():
  with pytest.raises(ValueError, match="overlap"):
    ce.centre_hole_masks(1, 32, 16, overlap=8)
  with pytest.raises(ValueError, match="power of two"):
    ce.centre_hole_masks(1, 32, 12, overlap=2)
  with pytest.raises(ValueError, match="discriminator patch size"):
    _init_shapes(ce.ContextDiscriminator(), jnp.zeros((1, 24, 24, 3)))


def test_tiny_context_encoder_trains_one_step_forward():
  # A real (small) forward pass in train mode: tanh range, BN stats move, hole content unused.
  model = ce.ContextEncoder(patch_size=8, bottleneck=16, features=4)
  images = jnp.asarray(_random(9, (2, 16, 16, 3)))
  masks = ce.centre_hole_masks(2, 16, 8, overlap=2)
  other = images.at[:, 6:10, 6:10].set(-images[:, 6:10, 6:10])

  @jax.jit
  def run(images, other):  # one compile for everything
    # An 'rbg' key: XLA compiles its initialisers far faster than threefry's on CPU.
    variables = model.init(jax.random.key(1, impl="rbg"), images, masks, train=False)
    patch, updates = model.apply(variables, images, masks, train=True, mutable=["batch_stats"])
    evals = [model.apply(variables, x, masks, train=False) for x in (images, other)]
    return variables, patch, updates, evals

  variables, patch, updates, (a, b) = run(images, other)
  assert patch.shape == (2, 8, 8, 3)
  assert np.all(np.abs(np.asarray(patch)) <= 1.0)
  changed = jax.tree_util.tree_map(lambda u, v: bool(jnp.any(u != v)),
                                   variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  # The true hole pixels never reach the network.
  np.testing.assert_array_equal(a, b)
