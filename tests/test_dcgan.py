"""Shapes, parameter counts and input checks of the DCGAN/LSGAN models and seed 003's refiner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.models import dcgan
from jaxpaint.models import refiner

# rbg keys: threefry-based initialisers take seconds each to compile on a loaded CPU.
_RNG = jax.random.key(0, impl="rbg")
_NP_RNG = np.random.default_rng(0)


def _uniform(shape):
  return jnp.asarray(_NP_RNG.uniform(-1, 1, shape), jnp.float32)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_generator_64_shapes_and_dcgan_layer_sizes():
  model = dcgan.Generator()  # z 100 -> 4x4x1024 -> 512 -> 256 -> 128 -> 64x64x3
  z = jax.ShapeDtypeStruct((2, 100), jnp.float32)
  out, variables = jax.eval_shape(lambda z: model.init_with_output(_RNG, z, train=False), z)
  assert out.shape == (2, 64, 64, 3)
  # Dense (no bias) + 4 transposed convs k4 (only the last has a bias) + 4 BatchNorms.
  expected = (100 * 16 * 1024 + 16 * 1024 * 512 + 16 * 512 * 256 + 16 * 256 * 128
              + 16 * 128 * 3 + 3 + 2 * (1024 + 512 + 256 + 128))
  assert _count(variables["params"]) == expected
  assert _count(variables["batch_stats"]) == 2 * (1024 + 512 + 256 + 128)


def test_generator_small_runs_in_range_and_updates_batch_stats():
  model = dcgan.Generator(latent_dim=8, image_size=16, channels=1, base_features=16, kernel_size=5)
  z = _uniform((3, 8))
  variables = jax.jit(model.init, static_argnames="train")(_RNG, z, train=False)
  out, updates = jax.jit(model.apply, static_argnames=("train", "mutable"))(
      variables, z, train=True, mutable=("batch_stats",))
  assert out.shape == (3, 16, 16, 1)
  assert np.all(np.abs(np.asarray(out)) <= 1.0)
  assert np.std(np.asarray(out)) > 0  # not a constant image
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  eval_out = jax.jit(model.apply, static_argnames="train")(variables, z, train=False)
  assert not np.allclose(np.asarray(eval_out[0]), np.asarray(eval_out[1]))


@pytest.mark.parametrize("size", [4, 12, 48, 0])
def test_generator_rejects_bad_image_size(size):
  model = dcgan.Generator(latent_dim=4, image_size=size, base_features=8)
  with pytest.raises(ValueError, match="power of two"):
    model.init(_RNG, jnp.zeros((1, 4)), train=False)


def test_generator_rejects_wrong_latent_size():
  model = dcgan.Generator(latent_dim=4, image_size=8, base_features=8)
  with pytest.raises(ValueError, match=r"\[B, 4\]"):
    model.init(_RNG, jnp.zeros((1, 5)), train=False)


def test_discriminator_64_shapes_features_and_no_bn_on_first_layer():
  model = dcgan.Discriminator()
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  (logits, feats), variables = jax.eval_shape(
      lambda x: model.init_with_output(_RNG, x, train=False, return_features=True), x)
  assert logits.shape == (2,)
  assert feats.shape == (2, 4, 4, 512)  # 8192 values, as in seed 003
  dense = [v for k, v in variables["params"].items() if k.startswith("Dense")]
  assert len(dense) == 1 and dense[0]["kernel"].shape == (8192, 1)
  assert _count(variables["batch_stats"]) == 2 * (128 + 256 + 512)  # BN on layers 2-4 only


def test_discriminator_small_values_consistent_with_and_without_features():
  model = dcgan.Discriminator(base_features=4, num_layers=2, kernel_size=5)
  x = _uniform((3, 16, 16, 3))
  variables = jax.jit(model.init, static_argnames="train")(_RNG, x, train=False)
  logits, logits2, feats = jax.jit(lambda v, x: (
      model.apply(v, x, train=False),) + model.apply(v, x, train=False, return_features=True))(
          variables, x)
  assert logits.shape == (3,) and feats.shape == (3, 4, 4, 8)
  np.testing.assert_allclose(logits, logits2, rtol=1e-6)
  # The logit is the linear layer applied to the returned features.
  dense = variables["params"]["Dense_0"]
  manual = feats.reshape(3, -1) @ dense["kernel"][:, 0] + dense["bias"][0]
  np.testing.assert_allclose(logits, manual, rtol=1e-5, atol=1e-6)
  assert len(set(np.round(np.asarray(logits), 6))) == 3  # distinct images, distinct scores


def test_refiner_64_bottleneck_is_8192():
  model = refiner.Refiner()
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  (out, code), _ = jax.eval_shape(
      lambda x: model.init_with_output(_RNG, x, train=False, return_bottleneck=True), x)
  assert out.shape == (2, 64, 64, 3)
  assert code.shape == (2, 8192)


def test_refiner_small_runs_in_range():
  model = refiner.Refiner(features=(4, 8), channels=3)
  x = _uniform((2, 8, 8, 3))
  variables = jax.jit(model.init, static_argnames="train")(_RNG, x, train=False)
  (out, code), _ = jax.jit(lambda v, x: model.apply(
      v, x, train=True, return_bottleneck=True, mutable=["batch_stats"]))(variables, x)
  assert out.shape == (2, 8, 8, 3) and code.shape == (2, 2 * 2 * 8)
  assert np.all(np.abs(np.asarray(out)) <= 1.0) and np.std(np.asarray(out)) > 0
  assert np.all(np.asarray(code) >= 0)  # ReLU then max-pool


def test_refiner_rejects_indivisible_size():
  model = refiner.Refiner(features=(4, 8, 8))
  with pytest.raises(ValueError, match="divisible by 8"):
    model.init(_RNG, jnp.zeros((1, 12, 12, 3)), train=False)


@pytest.mark.parametrize("make,inputs", [
    (lambda dtype: dcgan.Generator(latent_dim=8, image_size=8, base_features=16, dtype=dtype), (3, 8)),
    (lambda dtype: dcgan.Discriminator(base_features=8, num_layers=2, dtype=dtype), (3, 8, 8, 3)),
    (lambda dtype: refiner.Refiner(features=(8, 16), dtype=dtype), (3, 8, 8, 3)),
])
def test_bfloat16_compute_keeps_float32_params_and_outputs(make, inputs):
  x = _uniform(inputs)
  variables = make(jnp.float32).init(_RNG, x, train=False)
  # The bf16 model has the same (float32) parameters, so one set of variables serves both.
  assert {v.dtype for v in jax.tree.leaves(make(jnp.bfloat16).init(_RNG, x, train=False))} == {np.dtype("float32")}
  out32 = make(jnp.float32).apply(variables, x, train=False)
  out16 = make(jnp.bfloat16).apply(variables, x, train=False)
  assert out16.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(out32)))
  np.testing.assert_allclose(out16, out32, atol=0.05 * scale)
  assert not np.array_equal(out16, out32)
