"""jaxpaint.layers.ConvTranspose: flax.linen.ConvTranspose's parameters and outputs, computed on
CPU as stride-1 phase convolutions (checked against a float64 NumPy definition and flax)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpaint.layers import conv_transpose as ct

_RNG = np.random.default_rng(0)

# (kernel, stride, padding, transpose_kernel): the models' settings (pix2pix, DCGAN k4/k5,
# Context Encoders' 1x1 -> 4x4 and SAME, VAE-GAN) and odd ones (stride > kernel, k3 VALID).
CASES = [(4, 2, ((2, 2), (2, 2)), True), (4, 2, "SAME", False), (5, 2, "SAME", False),
         (4, 1, "VALID", False), (3, 2, "VALID", False), (4, 2, ((1, 1), (1, 1)), False),
         (2, 3, "SAME", True)]


def _reference(x, kernel, stride, pads, transpose_kernel):
  """float64 definition: dilate x by the stride, pad, correlate with the (flipped) kernel."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  if transpose_kernel:
    kernel = np.flip(kernel, (0, 1)).swapaxes(2, 3)
  b, h, w, c = x.shape
  dilated = np.zeros((b, (h - 1) * stride + 1, (w - 1) * stride + 1, c))
  dilated[:, ::stride, ::stride] = x
  padded = np.pad(dilated, ((0, 0), pads[0], pads[1], (0, 0)))
  kh, kw = kernel.shape[:2]
  out_h, out_w = padded.shape[1] - kh + 1, padded.shape[2] - kw + 1
  y = np.zeros((b, out_h, out_w, kernel.shape[3]))
  for i in range(kh):
    for j in range(kw):
      y += np.einsum("bhwc,cd->bhwd", padded[:, i:i + out_h, j:j + out_w], kernel[i, j])
  return y


def _random_like(tree):
  return jax.tree.map(lambda a: jnp.asarray(_RNG.normal(size=a.shape), jnp.float32), tree)


@pytest.mark.parametrize("kernel,stride,padding,transpose_kernel", CASES)
def test_matches_flax_and_the_definition(kernel, stride, padding, transpose_kernel):
  x = jnp.asarray(_RNG.normal(size=(2, 3, 4, 3)), jnp.float32)
  kwargs = dict(features=5, kernel_size=(kernel, kernel), strides=(stride, stride), padding=padding,
                transpose_kernel=transpose_kernel)
  flax_layer, layer = nn.ConvTranspose(**kwargs), ct.ConvTranspose(**kwargs)
  variables = _random_like(flax_layer.init(jax.random.key(0), x))
  # Same parameter names and shapes: checkpoints and weights move between the two.
  assert jax.tree.map(jnp.shape, layer.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)

  y = layer.apply(variables, x)
  y_flax = flax_layer.apply(variables, x)
  assert y.shape == y_flax.shape
  np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)
  pads = [ct._explicit_padding(kernel, stride, p)
          for p in ([padding] * 2 if isinstance(padding, str) else padding)]
  expected = _reference(x, variables["params"]["kernel"], stride, pads, transpose_kernel)
  np.testing.assert_allclose(y, expected + np.asarray(variables["params"]["bias"]), rtol=1e-5, atol=1e-5)
  # The GPU/TPU branch (the native input-dilated convolution), called directly here on CPU.
  kernel_in = variables["params"]["kernel"]
  native = ct._dilated_conv(x, jnp.flip(kernel_in, (0, 1)) if transpose_kernel else kernel_in, stride,
                            pads, "HWOI" if transpose_kernel else "HWIO")
  np.testing.assert_allclose(native, expected, rtol=1e-5, atol=1e-5)

  # Gradients to the input and the parameters: the phase form's are flax's.
  loss = lambda f: jax.grad(lambda v, x: jnp.sum(jnp.sin(f(v, x))), argnums=(0, 1))(variables, x)
  grads, grads_flax = loss(layer.apply), loss(flax_layer.apply)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_flax)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def convolutions(jitted, *args) -> list[str]:
  """The convolution instructions of the compiled program."""
  return [line for line in jitted.lower(*args).compile().as_text().splitlines() if " convolution(" in line]


def test_lowering_per_backend():
  """On CPU the step compiles to stride-1 convolutions of the undilated input; elsewhere to the
  native (input-dilated) transposed convolution."""
  x = jnp.zeros((2, 4, 4, 8))
  layer = ct.ConvTranspose(4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True)
  variables = layer.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda v, x: jnp.sum(layer.apply(v, x) ** 2), argnums=(0, 1)))
  dilated = [c for c in convolutions(grad, variables, x) if "lhs_dilate" in c]
  if jax.default_backend() == "cpu":
    assert convolutions(grad, variables, x) and not dilated
    flax_layer = nn.ConvTranspose(4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True)
    assert any("lhs_dilate" in c for c in convolutions(jax.jit(flax_layer.apply), variables, x))
  else:
    assert dilated


def test_bfloat16_compute_and_bad_input():
  x = jnp.asarray(_RNG.normal(size=(1, 3, 3, 2)), jnp.float32)
  layer = ct.ConvTranspose(3, (4, 4), strides=(2, 2), dtype=jnp.bfloat16)
  variables = layer.init(jax.random.key(0), x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {np.dtype("float32")}
  y16 = layer.apply(variables, x)
  y32 = ct.ConvTranspose(3, (4, 4), strides=(2, 2)).apply(variables, x)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=0.05 * float(jnp.abs(y32).max()))
  with pytest.raises(ValueError, match="equal strides"):
    ct.conv_transpose(x, variables["params"]["kernel"], (2, 1), "SAME")
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    layer.apply(variables, x[0])
