"""PConvUNet structure and the PConv loss against float64 NumPy references."""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.losses import pconv as pconv_loss_lib
from jaxpaint.losses import vgg as vgg_lib
from jaxpaint.models.pconv_unet import PConvUNet


def images_and_masks(seed, shape=(2, 32, 32, 3)):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, shape).astype(np.float32)
  masks = np.ones((*shape[:3], 1), np.float32)
  masks[0, 10:22, 10:22] = 0.0  # one big square hole
  masks[1] = (rng.uniform(size=(*shape[1:3], 1)) > 0.3)  # scattered holes
  return images, masks


def init(model, images, masks, seed=0):
  """Random variables of the right shapes (NumPy; compiling flax's initialisers is slow on CPU)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, masks, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    noise = rng.standard_normal(leaf.shape)
    if name == "kernel":
      value = noise * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name in ("scale", "var"):
      value = 1.0 + 0.1 * np.abs(noise)
    else:  # bias, mean
      value = 0.1 * noise
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("train", "capture"))
def apply(model, variables, images, masks, train=False, capture=False):
  if capture:
    return model.apply(variables, images, masks, train=train, capture_intermediates=True,
                       mutable=["intermediates"])
  if train:
    return model.apply(variables, images, masks, train=True, mutable=["batch_stats"])
  return model.apply(variables, images, masks, train=False)


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("levels,out_channels", [(1, None), (3, 1)])
def test_shapes_and_plain_twin_params(levels, out_channels):
  images, masks = images_and_masks(0)
  model = PConvUNet(num_levels=levels, base_features=4, out_channels=out_channels)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, masks, train=False))
  plain = jax.eval_shape(lambda: PConvUNet(num_levels=levels, base_features=4, out_channels=out_channels,
                                           partial=False).init(jax.random.key(0), images, masks, train=False))
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, plain)
  out = jax.eval_shape(lambda v: model.apply(v, images, masks, train=False), shapes)
  assert out.shape == (2, 32, 32, out_channels or 3) and out.dtype == jnp.float32
  params = shapes["params"]
  assert params["enc1"]["kernel"].shape == (7, 7, 3, 4) and "bias" in params["enc1"]
  if levels == 3:  # widths base, 2 base, 4 base; 5x5 at levels 2-3; no bias before BN
    assert params["enc3"]["kernel"].shape == (5, 5, 8, 16) and "bias" not in params["enc3"]
    assert params["dec3"]["kernel"].shape == (3, 3, 16 + 8, 8)  # upsampled level 3 + skip level 2
    assert params["dec1"]["kernel"].shape == (3, 3, 4 + 3, 1) and "bias" in params["dec1"]
    assert set(shapes["batch_stats"]) == {"enc_bn2", "enc_bn3", "dec_bn2", "dec_bn3"}


def test_paper_widths_at_seven_levels():
  images = np.zeros((1, 128, 128, 3), np.float32)
  masks = np.ones((1, 128, 128, 1), np.float32)
  shapes = jax.eval_shape(lambda: PConvUNet(num_levels=7).init(jax.random.key(0), images, masks, train=False))
  widths = [shapes["params"][f"enc{i}"]["kernel"].shape[-1] for i in range(1, 8)]
  kernels = [shapes["params"][f"enc{i}"]["kernel"].shape[0] for i in range(1, 8)]
  assert widths == [64, 128, 256, 512, 512, 512, 512] and kernels == [7, 5, 5, 3, 3, 3, 3]
  assert shapes["params"]["dec7"]["kernel"].shape == (3, 3, 1024, 512)
  assert shapes["params"]["dec4"]["kernel"].shape == (3, 3, 512 + 256, 256)


def test_size_not_divisible_raises():
  images, masks = np.zeros((1, 24, 24, 3), np.float32), np.ones((1, 24, 24, 1), np.float32)
  with pytest.raises(ValueError, match="divisible by 2\\*\\*num_levels = 16"):
    PConvUNet(num_levels=4, base_features=4).init(jax.random.key(0), images, masks, train=False)


def test_masks_shrink_through_encoder():
  images, masks = images_and_masks(1)
  model = PConvUNet(num_levels=3, base_features=4)
  variables = init(model, images, masks)
  _, state = apply(model, variables, images, masks, capture=True)
  m = masks.astype(bool)
  holes = [1.0 - masks.mean()]
  for level, k in zip((1, 2, 3), (7, 5, 5)):
    _, new_mask = state["intermediates"][f"enc{level}"]["__call__"][0]
    # Reference: valid iff any valid pixel in the k x k, stride-2 window, zero padding (k-1)/2.
    p = (k - 1) // 2
    padded = np.pad(m, ((0, 0), (p, p), (p, p), (0, 0)))
    size = m.shape[1] // 2
    want = np.zeros((m.shape[0], size, size, 1), bool)
    for i in range(size):
      for j in range(size):
        want[:, i, j] = padded[:, 2 * i:2 * i + k, 2 * j:2 * j + k].any(axis=(1, 2))
    np.testing.assert_array_equal(np.asarray(new_mask), want.astype(np.float32))
    holes.append(1.0 - float(np.asarray(new_mask).mean()))
    m = want
  assert holes[0] > holes[1] > 0.0 and holes[-1] == 0.0  # the holes fill in


def test_freeze_encoder_bn():
  images, masks = images_and_masks(2)
  variables = init(PConvUNet(num_levels=3, base_features=4), images, masks)
  for freeze in (False, True):
    model = PConvUNet(num_levels=3, base_features=4, freeze_encoder_bn=freeze)
    _, updates = apply(model, variables, images, masks, train=True)
    for name, stats in updates["batch_stats"].items():
      changed = not np.allclose(np.asarray(stats["mean"]), np.asarray(variables["batch_stats"][name]["mean"]))
      assert changed == (name.startswith("dec") or not freeze), (name, freeze)


def test_input_masking_naive_update_and_plain_twin():
  images, masks = images_and_masks(3)
  model = PConvUNet(num_levels=2, base_features=4)
  variables = init(model, images, masks)
  run = lambda model, x: apply(model, variables, x, masks)
  out = np.asarray(run(model, images))
  # The model blanks holes itself: their pixel values cannot matter.
  scrambled = np.where(masks > 0, images, 5.0 * np.random.default_rng(0).standard_normal(images.shape))
  np.testing.assert_allclose(np.asarray(run(model, scrambled.astype(np.float32))), out, rtol=1e-5, atol=1e-5)
  naive = np.asarray(run(PConvUNet(num_levels=2, base_features=4, mask_update="naive"), images))
  np.testing.assert_allclose(naive, out, rtol=1e-5, atol=1e-5)
  plain_model = PConvUNet(num_levels=2, base_features=4, partial=False)
  plain = np.asarray(run(plain_model, images))
  assert plain.shape == out.shape and np.abs(plain - out).mean() > 1e-3
  np.testing.assert_allclose(np.asarray(run(plain_model, scrambled.astype(np.float32))), plain,
                             rtol=1e-5, atol=1e-5)
  tanh = np.asarray(run(PConvUNet(num_levels=2, base_features=4, output_activation="tanh"), images))
  np.testing.assert_allclose(tanh, np.tanh(out), rtol=1e-5, atol=1e-6)


def test_bfloat16_model_and_loss_gradient():
  images, masks = images_and_masks(4)
  model = PConvUNet(num_levels=2, base_features=4, dtype=jnp.bfloat16)
  variables = init(model, images, masks)

  @jax.jit
  def loss_and_grad(params):
    def f(params):
      out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, images, masks,
                           train=True, mutable=["batch_stats"])
      return pconv_loss_lib.pconv_loss(out, images, masks)[0]
    return jax.value_and_grad(f)(params)

  loss, grads = loss_and_grad(variables["params"])
  leaves = jax.tree.leaves(grads)
  assert np.isfinite(float(loss)) and all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in leaves)
  assert all(np.abs(np.asarray(g, np.float32)).sum() > 0 for g in leaves)


# ----------------------------------------------------------------------------- losses

VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256)]


def write_random_vgg(path, seed=0):
  rng = np.random.default_rng(seed)
  state = {}
  for index, cin, cout in VGG_CONVS:  # torchvision layout [out, in, kh, kw]
    state[f"features.{index}.weight"] = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
    state[f"features.{index}.bias"] = (0.1 * rng.standard_normal(cout)).astype(np.float32)
  state["classifier.0.weight"] = np.zeros((2, 2), np.float32)  # extra keys are ignored
  np.savez(path, **state)
  return state


def np_vgg_pools(images, state):
  """float64 VGG16 conv1_1..pool3 from torchvision-layout weights."""
  x = ((images.astype(np.float64) + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  pools = []
  for block in ([0, 2], [5, 7], [10, 12, 14]):
    for index in block:
      w, b = state[f"features.{index}.weight"].astype(np.float64), state[f"features.{index}.bias"]
      n, h, wd, cin = x.shape
      xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      out = np.zeros((n, h, wd, w.shape[0]))
      for a in range(3):
        for c in range(3):  # cross-correlation, as torch conv2d
          out += np.einsum("nhwc,oc->nhwo", xp[:, a:a + h, c:c + wd], w[:, :, a, c])
      x = np.maximum(out + b, 0)
    n, h, wd, c = x.shape
    x = x.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
    pools.append(x)
  return pools


def np_gram(f):
  n, h, w, c = f.shape
  flat = f.reshape(n, h * w, c)
  return np.einsum("nkc,nkd->ncd", flat, flat) / (c * h * w)


def np_tv(comp, masks):
  hole = 1.0 - masks[..., 0]
  n, h, w = hole.shape
  region = np.zeros_like(hole)
  for i in range(h):
    for j in range(w):
      region[:, i, j] = hole[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max(axis=(1, 2))
  total = 0.0
  for i in range(h):
    for j in range(w):
      if j + 1 < w:
        total += np.sum(region[:, i, j] * region[:, i, j + 1] * np.abs(comp[:, i, j + 1] - comp[:, i, j]).sum(-1))
      if i + 1 < h:
        total += np.sum(region[:, i, j] * region[:, i + 1, j] * np.abs(comp[:, i + 1, j] - comp[:, i, j]).sum(-1))
  return total / comp.size


def loss_data(seed=5, size=16):
  rng = np.random.default_rng(seed)
  out = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  gt = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
  masks = (rng.uniform(size=(2, size, size, 1)) > 0.4).astype(np.float32)
  masks[0, 3:9, 4:12] = 0.0
  return out, gt, masks


def test_pixel_terms_and_default_weights():
  out, gt, masks = loss_data()
  loss, terms = pconv_loss_lib.pconv_loss(out, gt, masks)
  o, g, m = (a.astype(np.float64) for a in (out, gt, masks))
  comp = m * g + (1 - m) * o
  want = {"valid": np.abs(m * (o - g)).sum() / g.size, "hole": np.abs((1 - m) * (o - g)).sum() / g.size,
          "tv": np_tv(comp, m), "mse": np.mean((o - g) ** 2)}
  assert set(terms) == set(want)  # no VGG terms without VGG weights
  for name, value in want.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(float(loss), want["valid"] + 6 * want["hole"] + 0.1 * want["tv"], rtol=1e-5)
  mse_loss, _ = pconv_loss_lib.pconv_loss(out, gt, masks, weights=pconv_loss_lib.mse_weights())
  np.testing.assert_allclose(float(mse_loss), want["mse"], rtol=1e-5)
  custom, _ = pconv_loss_lib.pconv_loss(out, gt, masks, weights={"hole": 2.0, "tv": 0.0})
  np.testing.assert_allclose(float(custom), want["valid"] + 2 * want["hole"], rtol=1e-5)


def test_vgg_perceptual_and_style_terms(tmp_path):
  out, gt, masks = loss_data(6)
  state = write_random_vgg(tmp_path / "vgg16.npz")
  vgg_params = vgg_lib.load_vgg16_params(tmp_path / "vgg16.npz")
  pools = vgg_lib.VGG16Features().apply(vgg_params, gt)
  want_pools = np_vgg_pools(gt, state)
  for got, want in zip(pools, want_pools):
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())

  loss, terms = pconv_loss_lib.pconv_loss(out, gt, masks, vgg_params=vgg_params)
  o, g, m = (a.astype(np.float64) for a in (out, gt, masks))
  comp = m * g + (1 - m) * o
  p_out, p_comp, p_gt = (np_vgg_pools(a, state) for a in (o, comp, g))
  perceptual = sum(np.abs(a - c).mean() + np.abs(b - c).mean() for a, b, c in zip(p_out, p_comp, p_gt))
  style_out = sum(np.abs(np_gram(a) - np_gram(c)).mean() for a, c in zip(p_out, p_gt))
  style_comp = sum(np.abs(np_gram(b) - np_gram(c)).mean() for b, c in zip(p_comp, p_gt))
  np.testing.assert_allclose(float(terms["perceptual"]), perceptual, rtol=1e-3)
  np.testing.assert_allclose(float(terms["style_out"]), style_out, rtol=1e-3)
  np.testing.assert_allclose(float(terms["style_comp"]), style_comp, rtol=1e-3)
  pixel = float(terms["valid"]) + 6 * float(terms["hole"]) + 0.1 * float(terms["tv"])
  np.testing.assert_allclose(float(loss), pixel + 0.05 * perceptual + 120 * (style_out + style_comp), rtol=1e-3)

  with open(tmp_path / "vgg16.pkl", "wb") as f:
    pickle.dump(state, f)
  from_pickle = vgg_lib.load_vgg16_params(tmp_path / "vgg16.pkl")
  jax.tree.map(np.testing.assert_array_equal, from_pickle, vgg_params)
  fn = pconv_loss_lib.make_pconv_loss(vgg_path=tmp_path / "vgg16.npz")
  np.testing.assert_allclose(float(fn(out, gt, masks)[0]), float(loss), rtol=1e-6)


def test_vgg_weight_file_errors(tmp_path):
  missing = tmp_path / "nowhere" / "vgg16.npz"
  with pytest.raises(FileNotFoundError, match="nowhere/vgg16.npz.*np.savez"):
    vgg_lib.load_vgg16_params(missing)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    pconv_loss_lib.make_pconv_loss(vgg_path=missing)
  np.savez(tmp_path / "partial.npz", **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
  with pytest.raises(ValueError, match="missing features.0.bias"):
    vgg_lib.load_vgg16_params(tmp_path / "partial.npz")
  state = {f"features.{i}.{p}": np.zeros((co, ci, 3, 3) if p == "weight" else (co,), np.float32)
           for i, ci, co in VGG_CONVS for p in ("weight", "bias")}
  state["features.0.weight"] = np.zeros((3, 3, 3, 64), np.float32)  # flax layout by mistake
  np.savez(tmp_path / "hwio.npz", **state)
  with pytest.raises(ValueError, match=r"features.0.weight has shape \(3, 3, 3, 64\), expected \(64, 3, 3, 3\)"):
    vgg_lib.load_vgg16_params(tmp_path / "hwio.npz")
  (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
  with pytest.raises(ValueError, match="could not read"):
    vgg_lib.load_vgg16_params(tmp_path / "garbage.npz")
  (tmp_path / "vgg16.pth").write_bytes(b"x")
  with pytest.raises(ValueError, match="suffix '.pth'"):
    vgg_lib.load_vgg16_params(tmp_path / "vgg16.pth")


def test_bad_loss_weights_raise():
  out, gt, masks = loss_data()
  with pytest.raises(ValueError, match="no VGG16 weights"):
    pconv_loss_lib.pconv_loss(out, gt, masks, weights={"style": 120.0})
  with pytest.raises(ValueError, match="unknown PConv loss terms"):
    pconv_loss_lib.pconv_loss(out, gt, masks, weights={"holes": 6.0})
