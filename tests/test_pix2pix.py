"""Pix2Pix networks, jitter and a few train steps at a tiny size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.models import pix2pix as models
from jaxpaint.steps import pix2pix as p2p


def _key(seed: int) -> jax.Array:
  # RBG keys (XLA's RngBitGenerator) compile several times faster than threefry on CPU, which
  # dominates these tests' compile time; the code under test works with any key type.
  return jax.random.key(seed, impl="rbg")


SIZE = 32


def _box_masks(key, batch, size=SIZE):
  """One random box hole per example, 1 = known."""
  top, left = jax.random.randint(key, (2, batch, 1, 1), 0, size // 2)
  ys, xs = jnp.arange(size)[None, :, None], jnp.arange(size)[None, None, :]
  hole = (ys >= top) & (ys < top + size // 3) & (xs >= left) & (xs < left + size // 3)
  return (~hole).astype(jnp.float32)[..., None]


def _images(seed, batch, size=SIZE):
  return jax.random.uniform(_key(seed), (batch, size, size, 3), minval=-1.0, maxval=1.0)


# ---- layers and networks ----------------------------------------------------------------

def _torch_conv_transpose(x, w, stride=2, padding=1):
  """PyTorch ConvTranspose2d semantics by scatter-add, float64. x [H, W, Cin], w [Cin, Cout, k, k]."""
  h, wd, _ = x.shape
  k = w.shape[-1]
  full = np.zeros(((h - 1) * stride + k, (wd - 1) * stride + k, w.shape[1]))
  for i in range(h):
    for j in range(wd):
      full[i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("c,cokl->klo", x[i, j], w)
  return full[padding:full.shape[0] - padding, padding:full.shape[1] - padding]


@pytest.mark.parametrize("size", [1, 3, 4])
def test_up_conv_is_pytorch_k4_s2_p1(size):
  rng = np.random.default_rng(size)
  x = rng.normal(size=(size, size + 1, 2))
  w_torch = rng.normal(size=(2, 3, 4, 4))  # [Cin, Cout, kh, kw]
  layer = models.up_conv(3, use_bias=False)
  kernel = jnp.asarray(w_torch.transpose(2, 3, 1, 0), jnp.float32)  # -> [kh, kw, Cout, Cin]
  got = layer.apply({"params": {"kernel": kernel}}, jnp.asarray(x[None], jnp.float32))[0]
  assert got.shape == (2 * size, 2 * (size + 1), 3)
  np.testing.assert_allclose(got, _torch_conv_transpose(x, w_torch), rtol=1e-5, atol=1e-5)


def test_generator_shapes_dropout_and_size_check():
  g = models.UNetGenerator(out_channels=3, num_downs=6, base_features=2)  # one dropout block
  x, m = _images(0, 2, 64), _box_masks(_key(1), 2, 64)

  @jax.jit
  def run(x, m):  # one compile for everything
    variables = g.init(_key(0), x, m, train=False)
    train = lambda k: g.apply(variables, x, m, train=True, rngs={"dropout": k}, mutable="batch_stats")[0]
    return g.apply(variables, x, m, train=False), jax.vmap(train)(jax.random.split(_key(1)))

  out, (train1, train2) = run(x, m)
  assert out.shape == (2, 64, 64, 3) and out.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out))) <= 1.0
  assert not np.allclose(train1, train2)  # dropout is on in train mode, drawn from the key
  with pytest.raises(ValueError, match="divisible by 2\\*\\*6"):
    jax.eval_shape(lambda: g.init(_key(0), jnp.zeros((1, 96, 96, 3)), jnp.ones((1, 96, 96, 1)), train=False))


def test_unet_256_and_patchgan_shapes_without_compute():
  g = models.UNetGenerator()  # unet_256
  d = models.PatchDiscriminator()  # 70x70 PatchGAN
  x, m = jnp.zeros((1, 256, 256, 3)), jnp.ones((1, 256, 256, 1))
  out, g_vars = jax.eval_shape(lambda: g.init_with_output(_key(0), x, m, train=False))
  (logits, feats), d_vars = jax.eval_shape(
      lambda: d.init_with_output(_key(0), jnp.zeros((1, 256, 256, 7)), train=False))
  assert out.shape == (1, 256, 256, 3)
  assert logits.shape == (1, 30, 30, 1) and models.PatchDiscriminator.output_size(256, 3) == 30
  assert [f.shape[1:] for f in feats] == [(128, 128, 64), (64, 64, 128), (32, 32, 256), (31, 31, 512)]
  count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(t))
  # PyTorch prints 54.414M / 2.769M for unet_256 / basic D on 6 channels; we add biases on G's
  # first and innermost encoder convs (64 + 512) and D sees one more input channel (the mask).
  assert count(g_vars["params"]) == 54_414_979 + 64 + 512
  assert count(d_vars["params"]) == 2_768_705 + 4 * 4 * 64


def test_patchgan_receptive_field_is_70():
  assert models.PatchDiscriminator.receptive_field(3) == 70
  d = models.PatchDiscriminator(base_features=2, num_layers=3)
  x = jax.random.normal(_key(0), (1, 128, 128, 1))

  @jax.jit
  def input_gradient(x):
    variables = d.init(_key(1), x, train=False)
    return jax.grad(lambda x: d.apply(variables, x, train=False)[0][0, 6, 7, 0])(x)[0, :, :, 0]

  grad = input_gradient(x)
  rows, cols = np.nonzero(np.asarray(grad))
  assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70
  assert cols.min() - rows.min() == 8  # one logit step = 8 input pixels


def test_patchgan_rejects_too_small_input():
  with pytest.raises(ValueError, match="no logits"):
    jax.eval_shape(lambda: models.PatchDiscriminator(num_layers=3).init(
        _key(0), jnp.zeros((1, 16, 16, 7)), train=False))


# ---- jitter --------------------------------------------------------------------------------

def test_jitter_crops_and_flips_the_resized_image():
  x = _images(3, 4, 8)
  jitter = jax.jit(p2p.random_jitter, static_argnums=2)
  out = jitter(x, _key(0), 10)
  assert out.shape == x.shape
  np.testing.assert_array_equal(out, jitter(x, _key(0), 10))
  assert not np.allclose(out, jitter(x, _key(1), 10))
  resized = np.clip(np.asarray(jax.image.resize(x, (4, 10, 10, 3), "cubic")), -1, 1)
  found = []
  for b in range(4):
    windows = [(t, l, f) for t in range(3) for l in range(3) for f in (False, True)
               if np.allclose(out[b], (lambda c: c[:, ::-1] if f else c)(resized[b, t:t + 8, l:l + 8]), atol=1e-6)]
    assert windows, f"example {b} is no flipped/unflipped crop of the resized image"
    found.append(windows[0])
  assert len(set(found)) > 1  # per-example offsets / flips


def test_jitter_without_resize_only_flips_and_off_is_identity():
  x = _images(4, 8, 8)
  out = np.asarray(jax.jit(p2p.random_jitter, static_argnums=2)(x, _key(5), 8))
  flipped = [np.array_equal(out[b], np.asarray(x[b, :, ::-1])) for b in range(8)]
  kept = [np.array_equal(out[b], np.asarray(x[b])) for b in range(8)]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
  assert p2p.random_jitter(x, _key(5), 0) is x
  with pytest.raises(ValueError, match="jitter_size"):
    p2p.random_jitter(x, _key(5), 6)


# ---- the task ------------------------------------------------------------------------------

def _tiny_config(**loss):
  config = p2p.default_config()
  config.num_train_steps = 10
  config.compute_dtype = "float32"
  config.optimizer.decay_start_step = 5
  config.model.update(num_downs=5, base_features=8, d_base_features=8, d_layers=2)
  config.jitter_size = 36
  config.loss.update(loss)
  return config


@pytest.fixture(scope="module")
def trained():
  """A tiny Pix2Pix (32x32, num_downs 5, 8 features) at init and after 3 steps at batch 1."""
  task = p2p.Pix2PixTask.from_config(_tiny_config(), _box_masks, channels=3)
  images = _images(6, 1)
  state = jax.jit(task.init_state)(_key(0), images)
  step = jax.jit(task.train_step)
  new = state
  for i in range(3):
    new, metrics = step(new, images, _key(i))
  return dict(task=task, images=images, state=state, new=new, metrics=metrics)


def test_init_statistics(trained):
  params = {"g": trained["state"].generator.params, "d": trained["state"].discriminator.params}
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  name = lambda path: path[-1].key
  kernels = np.concatenate([np.ravel(v) for p, v in flat if name(p) == "kernel"])
  scales = np.concatenate([np.ravel(v) for p, v in flat if name(p) == "scale"])
  biases = np.concatenate([np.ravel(v) for p, v in flat if name(p) == "bias"])
  assert kernels.size > 200_000 and scales.size > 200
  np.testing.assert_allclose(kernels.std(), 0.02, rtol=0.02)
  assert abs(kernels.mean()) < 1e-3
  np.testing.assert_allclose(scales.mean(), 1.0, atol=0.006)
  np.testing.assert_allclose(scales.std(), 0.02, rtol=0.25)
  np.testing.assert_array_equal(biases, 0.0)


def test_pix2pix_steps_at_batch_one(trained):
  task, images, state, new, metrics = (trained[k] for k in ("task", "images", "state", "new", "metrics"))
  assert set(metrics) == {"loss", "d_loss", "g_loss", "g_adv", "l1", "l1_hole", "d_acc_real",
                          "d_acc_fake", "g_grad_norm", "d_grad_norm"}
  assert all(np.isfinite(v) and np.shape(v) == () for v in metrics.values())
  np.testing.assert_allclose(metrics["g_loss"], metrics["g_adv"] + 100 * metrics["l1"], rtol=1e-5)
  assert 0.3 < float(metrics["d_loss"]) / 0.5 / 2 < 3  # about log 2 per term early on
  assert int(new.generator.step) == 3 and int(new.discriminator.step) == 3
  for old_tree, new_tree in [(state.generator.params, new.generator.params),
                             (state.discriminator.params, new.discriminator.params),
                             (state.generator.batch_stats, new.generator.batch_stats),
                             (state.discriminator.batch_stats, new.discriminator.batch_stats)]:
    assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old_tree), jax.tree.leaves(new_tree)))

  masks = _box_masks(_key(9), 1)
  out = jax.jit(task.inpaint)(new, images, masks, _key(0))
  assert set(out) >= set(task.eval_outputs)
  assert out["composite"].shape == out["raw"].shape == images.shape
  known = np.broadcast_to(np.asarray(masks) == 1, images.shape)
  np.testing.assert_array_equal(np.asarray(out["composite"])[known], np.asarray(images)[known])
  assert float(jnp.max(jnp.abs(out["raw"]))) <= 1.0


def test_config_validation():
  with pytest.raises(ValueError, match="gan_kind"):
    p2p.Pix2PixTask.from_config(_tiny_config(gan="wgan"), _box_masks)
  config = _tiny_config()
  config.model.d_input = "both"
  with pytest.raises(ValueError, match="d_input"):
    p2p.Pix2PixTask.from_config(config, _box_masks)
  task = p2p.Pix2PixTask.from_config(_tiny_config(), _box_masks, channels=1)
  with pytest.raises(ValueError, match="channels=3"):
    jax.eval_shape(task.init_state, _key(0), jnp.zeros((1, SIZE, SIZE, 3)))


@pytest.mark.parametrize("gan,dtype,d_input", [("lsgan", "bfloat16", "raw"), ("hinge", "float32", "composite")])
def test_other_losses_and_bfloat16_trace(gan, dtype, d_input):
  config = _tiny_config(gan=gan)
  config.compute_dtype = dtype
  config.model.d_input = d_input
  task = p2p.Pix2PixTask.from_config(config, _box_masks, channels=3)
  images = jax.ShapeDtypeStruct((2, SIZE, SIZE, 3), jnp.float32)
  state = jax.eval_shape(task.init_state, _key(0), images)  # traces only, compiles nothing
  new, metrics = jax.eval_shape(task.train_step, state, images, _key(1))
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == jax.tree.map(lambda a: (a.shape, a.dtype), state)
  assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values())
