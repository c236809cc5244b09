"""VAE-GAN (Larsen et al. 2016) conditioned on the masked image (seed 004, model 2).

The encoder sees the masked image and its mask and outputs q(z | x_masked) = N(mu,
diag(exp(logvar))); the decoder (= the GAN generator) maps z alone to a full image, so
everything the completion knows about the input passes through z, and sampling z gives
several plausible completions (:func:`sample_completions`). The discriminator also returns
the activations of one of its conv layers, on which Larsen et al. measure reconstruction
("learned similarity", :mod:`jaxpaint.losses.vaegan`).

Architecture of Larsen et al.'s 64x64 model (all sizes configurable; 5x5 kernels):

* :class:`VAEEncoder`: stride-2 convs 64, 128, 256 (BatchNorm, ReLU) -> dense 2048
  (BatchNorm, ReLU) -> two dense heads, mu and logvar [B, latent_dim] (128).
* :class:`VAEDecoder`: dense to 8x8x256 (BatchNorm, ReLU) -> stride-2 transposed convs
  256, 128, 32 (BatchNorm, ReLU) -> 5x5 conv to C channels, tanh.
* :class:`VAEGANDiscriminator`: conv 32 (stride 1, ReLU) -> stride-2 convs 128, 256, 256
  (BatchNorm, ReLU) -> dense 512 (BatchNorm, ReLU) -> dense to one logit. Larsen's code
  (recon_depth=9) takes the features after the 4th conv, before its BatchNorm: the default
  ``feature_layer=-1``.

The latent sample draws from the ``'latent'`` RNG stream (:data:`LATENT_RNG`).
"""

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpaint import images as image_lib
from jaxpaint import layers

LATENT_RNG = "latent"

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _batch_norm(train: bool, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                      dtype=dtype)


def reparameterize(rng: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I): a differentiable sample of q(z | x)."""
  eps = jax.random.normal(rng, mu.shape, mu.dtype)
  return mu + jnp.exp(0.5 * logvar) * eps


class VAEOutput(NamedTuple):
  generated: jax.Array  # [B, H, W, C] in [-1, 1], the decoder's full image
  mu: jax.Array  # [B, latent_dim]
  logvar: jax.Array  # [B, latent_dim]
  z: jax.Array  # [B, latent_dim], the decoded latent


class VAEEncoder(nn.Module):
  """inputs [B, H, W, C_in] -> (mu, logvar), each [B, latent_dim]."""
  latent_dim: int = 128
  features: Sequence[int] = (64, 128, 256)
  hidden: int = 2048
  kernel_size: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    k = (self.kernel_size, self.kernel_size)
    x = inputs.astype(self.dtype)
    for width in self.features:
      x = nn.Conv(width, k, strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    mu = nn.Dense(self.latent_dim, dtype=self.dtype, name="mu")(x)
    logvar = nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(x)
    return mu.astype(jnp.float32), logvar.astype(jnp.float32)


class VAEDecoder(nn.Module):
  """z [B, latent_dim] -> images [B, image_size, image_size, out_channels] in [-1, 1]."""
  image_size: int = 64
  out_channels: int = 3
  features: Sequence[int] = (256, 128, 32)
  kernel_size: int = 5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array, *, train: bool) -> jax.Array:
    scale = 2 ** len(self.features)
    if self.image_size % scale:
      raise ValueError(f"VAE-GAN image_size={self.image_size} is not divisible by "
                       f"2**len(decoder_features) = {scale}; change the image size or the "
                       "number of decoder layers.")
    start = self.image_size // scale
    width0 = self.features[0] if self.features else self.out_channels
    k = (self.kernel_size, self.kernel_size)
    x = nn.Dense(start * start * width0, use_bias=False, dtype=self.dtype)(z.astype(self.dtype))
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = x.reshape(z.shape[0], start, start, width0)
    for width in self.features:
      x = layers.ConvTranspose(width, k, strides=(2, 2), padding="SAME", use_bias=False,
                               dtype=self.dtype)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = nn.Conv(self.out_channels, k, padding="SAME", dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class VAEGANGenerator(nn.Module):
  """Encoder + decoder; the GAN's generator is the decoder.

  Attributes:
    image_size: height = width of images (64 in seed 004).
    out_channels: image channels.
    latent_dim: size of z (128 in Larsen et al.).
    encoder_features, encoder_hidden: conv widths and dense width of the encoder.
    decoder_features: transposed-conv widths of the decoder (one x2 upsampling each).
  """
  image_size: int = 64
  out_channels: int = 3
  latent_dim: int = 128
  encoder_features: Sequence[int] = (64, 128, 256)
  encoder_hidden: int = 2048
  decoder_features: Sequence[int] = (256, 128, 32)
  kernel_size: int = 5
  dtype: Any = jnp.float32

  def setup(self):
    self.encoder = VAEEncoder(self.latent_dim, self.encoder_features, self.encoder_hidden,
                              self.kernel_size, self.dtype)
    self.decoder = VAEDecoder(self.image_size, self.out_channels, self.decoder_features,
                              self.kernel_size, self.dtype)

  def encode(self, images: jax.Array, masks: jax.Array, *,
             train: bool) -> tuple[jax.Array, jax.Array]:
    """images [B, S, S, C] (holes are blanked here), masks [B, S, S, 1] -> (mu, logvar)."""
    if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"VAEGANGenerator(image_size={self.image_size}) got images of shape "
                       f"{images.shape}; set image_size to the data's size.")
    inputs = jnp.concatenate([image_lib.apply_mask(images, masks), masks], axis=-1)
    return self.encoder(inputs, train=train)

  def decode(self, z: jax.Array, *, train: bool) -> jax.Array:
    """z [B, latent_dim] -> [B, S, S, C] in [-1, 1]."""
    if z.ndim != 2 or z.shape[-1] != self.latent_dim:
      raise ValueError(f"decode expects z of shape [B, {self.latent_dim}]; got {z.shape}.")
    return self.decoder(z, train=train)

  def __call__(self, images: jax.Array, masks: jax.Array, *, train: bool,
               sample: bool | None = None) -> VAEOutput:
    """Encodes, draws z (from the 'latent' RNG stream when ``sample``, else z = mu) and decodes.

    ``sample`` defaults to ``train`` (Larsen et al. decode the mean at test time).
    """
    mu, logvar = self.encode(images, masks, train=train)
    sample = train if sample is None else sample
    z = reparameterize(self.make_rng(LATENT_RNG), mu, logvar) if sample else mu
    return VAEOutput(self.decode(z, train=train), mu, logvar, z)


class VAEGANDiscriminator(nn.Module):
  """images [B, H, W, C] -> (logits [B], features of conv ``feature_layer``).

  Attributes:
    first_features: width of the stride-1 first conv (no BatchNorm).
    features: widths of the stride-2 convs.
    hidden: width of the dense layer before the logit.
    feature_layer: which conv's output (before BatchNorm/ReLU) is returned as features;
      0 = the first conv, -1 = the last (Larsen et al.).
  """
  first_features: int = 32
  features: Sequence[int] = (128, 256, 256)
  hidden: int = 512
  kernel_size: int = 5
  feature_layer: int = -1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    num_convs = 1 + len(self.features)
    if not -num_convs <= self.feature_layer < num_convs:
      raise ValueError(f"feature_layer={self.feature_layer} is out of range for {num_convs} "
                       f"conv layers; use -{num_convs} .. {num_convs - 1}.")
    target = self.feature_layer % num_convs
    k = (self.kernel_size, self.kernel_size)
    x = nn.Conv(self.first_features, k, padding="SAME", dtype=self.dtype)(images.astype(self.dtype))
    features = x
    x = nn.relu(x)
    for i, width in enumerate(self.features, start=1):
      x = nn.Conv(width, k, strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype)(x)
      if i == target:
        features = x
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    x = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    x = nn.relu(_batch_norm(train, self.dtype)(x))
    logits = nn.Dense(1, dtype=self.dtype)(x)[:, 0]
    return logits.astype(jnp.float32), features.astype(jnp.float32)


def sample_completions(model: VAEGANGenerator, variables: Any, images: jax.Array,
                       masks: jax.Array, rng: jax.Array, num_samples: int,
                       from_prior: bool = False) -> jax.Array:
  """Several completions of each input, in eval mode (running BatchNorm statistics).

  Args:
    model: the generator module.
    variables: its variables ({'params': ..., 'batch_stats': ...}).
    images: [B, S, S, C] in [-1, 1] (holes are blanked before encoding).
    masks: [B, S, S, 1], 1 = known.
    rng: PRNG key for the latents.
    num_samples: completions per input (a Python int).
    from_prior: draw z ~ N(0, I) instead of q(z | x_masked).

  Returns:
    [num_samples, B, S, S, C]: known pixels from ``images``, holes from the decoder.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1.")
  mu, logvar = model.apply(variables, images, masks, train=False, method=VAEGANGenerator.encode)
  shape = (num_samples,) + mu.shape
  if from_prior:
    z = jax.random.normal(rng, shape, mu.dtype)
  else:
    z = reparameterize(rng, jnp.broadcast_to(mu, shape), jnp.broadcast_to(logvar, shape))
  generated = model.apply(variables, z.reshape(-1, mu.shape[-1]), train=False,
                          method=VAEGANGenerator.decode)
  generated = generated.reshape((num_samples,) + images.shape)
  return image_lib.composite(images[None], generated, masks[None])
