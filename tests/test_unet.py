"""U-Net autoencoder: shapes, the seed-002 layout, mask handling, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.models.unet import UNet, output_activation


def _init(model, shape, seed=0):
  images = jax.random.uniform(jax.random.key(seed), shape, minval=-1, maxval=1)
  masks = jnp.ones(shape[:-1] + (1,))
  return model.init(jax.random.key(1), images, masks, train=False), images, masks


@pytest.mark.parametrize("shape,depth", [((2, 28, 28, 1), 2), ((2, 32, 32, 3), 2), ((1, 64, 64, 3), 3)])
def test_output_shape_and_range(shape, depth):
  model = UNet(out_channels=shape[-1], features=8, depth=depth)
  variables, images, masks = _init(model, shape)
  out = model.apply(variables, images, masks, train=False)
  assert out.shape == shape
  assert float(jnp.max(jnp.abs(out))) <= 1.0


def test_seed_002_layout():
  """Seed 002's Keras model: 32/64 encoder convs, 128 bottleneck, 3x3 convs, tanh."""
  model = UNet(out_channels=3, features=32, depth=2, dropout_rate=0.2)
  variables, _, _ = _init(model, (1, 32, 32, 3))
  kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
             if "kernel" in jax.tree_util.keystr(path)]
  out_features = sorted({k[-1] for k in kernels})
  assert out_features == [3, 32, 64, 128]
  assert all(k[:2] == (3, 3) for k in kernels)
  assert kernels[0][2] == 4  # masked RGB + mask channel


def test_hole_content_is_ignored():
  """The network must not see what lies under the hole: only mask * image enters."""
  model = UNet(out_channels=3, features=8, depth=2, dropout_rate=0.0)
  variables, images, _ = _init(model, (2, 16, 16, 3))
  masks = jnp.ones((2, 16, 16, 1)).at[:, 4:10, 4:10].set(0.0)
  noisy = images.at[:, 4:10, 4:10].set(jax.random.normal(jax.random.key(7), (2, 6, 6, 3)))
  a = model.apply(variables, images, masks, train=False)
  b = model.apply(variables, noisy, masks, train=False)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dropout_only_in_training():
  model = UNet(out_channels=3, features=8, depth=2, dropout_rate=0.5)
  variables, images, masks = _init(model, (2, 16, 16, 3))
  train = lambda seed: model.apply(variables, images, masks, train=True, rngs={"dropout": jax.random.key(seed)})
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(model.apply(variables, images, masks, train=False),
                                model.apply(variables, images, masks, train=False))


def test_batch_norm_state_updates():
  model = UNet(out_channels=3, features=8, depth=2, use_batch_norm=True)
  variables, images, masks = _init(model, (2, 16, 16, 3))
  _, updates = model.apply(variables, images, masks, train=True, rngs={"dropout": jax.random.key(0)},
                           mutable=["batch_stats"])
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updates["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_indivisible_size_is_refused():
  model = UNet(out_channels=3, features=8, depth=3)
  with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth"):
    _init(model, (1, 28, 28, 3))


def test_output_activations():
  x = jnp.linspace(-5, 5, 11)
  np.testing.assert_allclose(output_activation(x, "sigmoid"), 2 / (1 + np.exp(-np.asarray(x, np.float64))) - 1,
                             atol=1e-6)
  np.testing.assert_allclose(output_activation(x, "tanh"), np.tanh(np.asarray(x)), atol=1e-6)
  with pytest.raises(ValueError, match="output_activation"):
    output_activation(x, "relu")


def test_bfloat16_compute_keeps_float32_params():
  model = UNet(out_channels=3, features=8, depth=2, dtype=jnp.bfloat16)
  variables, images, masks = _init(model, (2, 16, 16, 3))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  out = model.apply(variables, images, masks, train=False)
  ref = UNet(out_channels=3, features=8, depth=2).apply(variables, images, masks, train=False)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05)
