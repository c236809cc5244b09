"""VAE-GAN (Larsen et al. 2016) for inpainting (seed 004, model 2), conditioned on the masked image.

The encoder sees (masked image, mask) and gives q(z | x_masked); the decoder (the GAN's
generator) maps z to a whole image, composited into the known pixels at inference. D is
unconditional and judges whole images, as in Larsen et al.

Losses. Larsen et al. give each network its own objective, which one weighted total over
G's parameters cannot express; this task does the split exactly:

* encoder: ``kl_weight * KL + feature_weight * L_feature + pixel terms``
* decoder: ``adv_weight * L_GAN + decoder_feature_weight * L_feature + pixel terms``
  (Larsen's gamma is ``decoder_feature_weight`` relative to ``adv_weight``)
* D: its GAN loss only; the feature term gives it no gradient.

``L_feature`` is Larsen's learned similarity, ``0.5 * |D_l(x) - D_l(x~)|^2`` on D's
``feature_layer`` (:mod:`jaxpaint.losses.vaegan`); the pixel terms are an L1/L2 on the
known pixels (``pixel_weight``) and, off by default so the hole stays free, on the hole.

How the split is done: :meth:`VAEGANTask.generate` decodes the latent twice. ``recon_enc``
= Dec(z) with the decoder's parameters behind ``stop_gradient`` carries gradients to the
encoder only; ``recon`` = Dec(stop_gradient(z)) carries them to the decoder only. Both
have the same value. The encoder's terms are taken on ``recon_enc``, the decoder's on
``recon``, and the adversarial term (the base class's) on ``fake`` = ``recon`` (plus, with
``prior_samples``, Dec(z_p) for z_p ~ N(0, I), as Larsen's D also sees). The base class
differentiates G's loss with respect to ``outputs`` and pulls that back through G's single
forward pass, so each parameter gets exactly its network's objective. ``g_loss`` (the
logged ``loss``) is the sum of the two objectives, so its feature and pixel terms count
twice. D's features of ``recon_enc`` need D's variables, which the base class does not
hand to :meth:`generator_extra_loss`; :meth:`generator_step` puts them in the batch.

Costs: one extra decoder pass per step, and the feature terms two D calls of their own
(one per reconstruction, so BatchNorm's batch statistics do not couple the two paths).
D's fake term is a mean over reconstructions and prior samples together (Larsen et al.
sum the two).

Inference (:meth:`VAEGANTask.inpaint`) decodes z = mu ('composite', 'raw') and one draw
z ~ q(z | x_masked) ('sample', not scored); :meth:`VAEGANTask.sample_completions` gives
several.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxpaint import images as image_lib
from jaxpaint.losses import vaegan as vg_losses
from jaxpaint.models import vaegan as models
from jaxpaint.steps import adversarial

MaskFn = Callable[[jax.Array, int], jax.Array]

# Batch key under which generator_step hands D's variables to generator_extra_loss.
_D_VARIABLES = "d_variables"


def default_config() -> ml_collections.ConfigDict:
  """``model``, ``loss``, ``optimizer`` and top-level keys for 64x64 (Larsen's sizes).

  Larsen et al. train with RMSProp at 3e-4; here Adam 3e-4, beta1 0.5 (DCGAN), for G and D.
  """
  from jaxpaint import optim  # noqa: PLC0415
  optimizer = optim.default_config()
  optimizer.b1 = 0.5
  return ml_collections.ConfigDict(dict(
      model=dict(name="vaegan", latent_dim=128, encoder_features=(64, 128, 256),
                 encoder_hidden=2048, decoder_features=(256, 128, 32), kernel_size=5,
                 d_first_features=32, d_features=(128, 256, 256), d_hidden=512,
                 feature_layer=-1),
      loss=dict(gan="vanilla", kl_weight=6e-5, feature_weight=1.0, decoder_feature_weight=1.0,
                pixel_weight=1.0, hole_pixel_weight=0.0, adv_weight=0.01, pixel_loss="l1",
                feature_reduction="mean", prior_samples=True, lsgan_a=0.0, lsgan_b=1.0,
                lsgan_c=1.0),
      learning_rate=3e-4,
      optimizer=optimizer,
  ))


def _stop_decoder(params: Any) -> Any:
  """G's params with the decoder's behind stop_gradient (the encoder-only path)."""
  return {**params, "decoder": jax.lax.stop_gradient(params["decoder"])}


class VAEGANTask(adversarial.AdversarialTask):
  """VAE-GAN as an :class:`~jaxpaint.steps.adversarial.AdversarialTask`.

  Args:
    generator: encoder + decoder (:class:`~jaxpaint.models.vaegan.VAEGANGenerator`).
    discriminator: images -> (logits [B], features).
    g_tx, d_tx: the optimisers (G's covers encoder and decoder).
    mask_fn: (key, batch_size) -> masks [B, H, W, 1], 1 = known.
    kl_weight, feature_weight: the encoder's KL and feature weights.
    decoder_feature_weight: the decoder's feature weight (Larsen's gamma, over adv_weight).
    pixel_weight, hole_pixel_weight: pixel loss on the known pixels / on the hole (both nets).
    adv_weight: the decoder's adversarial weight.
    pixel_loss: 'l1' or 'l2'; feature_reduction: 'mean' or 'sum'.
    prior_samples: D also sees decoded prior samples z ~ N(0, I) as fakes (Larsen et al.).
    gan_kind, lsgan_*: see :class:`AdversarialTask`.
  """

  eval_outputs = ("composite",)
  needs_real_features = True

  def __init__(self, generator: models.VAEGANGenerator,
               discriminator: models.VAEGANDiscriminator, g_tx: optax.GradientTransformation,
               d_tx: optax.GradientTransformation, mask_fn: MaskFn, *, kl_weight: float = 6e-5,
               feature_weight: float = 1.0, decoder_feature_weight: float = 1.0,
               pixel_weight: float = 1.0, hole_pixel_weight: float = 0.0,
               adv_weight: float = 0.01, pixel_loss: str = "l1",
               feature_reduction: str = "mean", prior_samples: bool = True,
               gan_kind: str = "vanilla", lsgan_a: float = 0.0, lsgan_b: float = 1.0,
               lsgan_c: float = 1.0):
    super().__init__(g_tx, d_tx, gan_kind=gan_kind, adv_weight=adv_weight, d_loss_scale=1.0,
                     lsgan_a=lsgan_a, lsgan_b=lsgan_b, lsgan_c=lsgan_c)
    if pixel_loss not in vg_losses.PIXEL_LOSSES:
      raise ValueError(f"pixel_loss={pixel_loss!r}; choose one of {vg_losses.PIXEL_LOSSES}.")
    if feature_reduction not in vg_losses.REDUCTIONS:
      raise ValueError(f"feature_reduction={feature_reduction!r}; choose one of "
                       f"{vg_losses.REDUCTIONS}.")
    weights = dict(kl_weight=kl_weight, feature_weight=feature_weight,
                   decoder_feature_weight=decoder_feature_weight, pixel_weight=pixel_weight,
                   hole_pixel_weight=hole_pixel_weight, adv_weight=adv_weight)
    negative = {k: v for k, v in weights.items() if v < 0}
    if negative:
      raise ValueError(f"VAE-GAN loss weights must be >= 0; got {negative}.")
    self.generator, self.discriminator, self.mask_fn = generator, discriminator, mask_fn
    self.kl_weight, self.feature_weight = kl_weight, feature_weight
    self.decoder_feature_weight = decoder_feature_weight
    self.pixel_weight, self.hole_pixel_weight = pixel_weight, hole_pixel_weight
    self.pixel_loss, self.feature_reduction = pixel_loss, feature_reduction
    self.prior_samples = prior_samples

  # ---- hooks -------------------------------------------------------------------------------

  def init_models(self, rng: jax.Array, images: jax.Array):
    _, h, w, c = images.shape
    size = self.generator.image_size
    if (h, w) != (size, size):
      raise ValueError(f"VAE-GAN built for {size}x{size} images got {h}x{w}; set "
                       "config.image_size to the model's size.")
    if c != self.generator.out_channels:
      raise ValueError(f"Images have {c} channels but the decoder makes "
                       f"{self.generator.out_channels}; build the task with channels={c}.")
    g_rng, d_rng = jax.random.split(rng)
    sample = jnp.zeros((1, h, w, c), jnp.float32)
    g_vars = self.generator.init(g_rng, sample, jnp.ones((1, h, w, 1), jnp.float32), train=False)
    return g_vars, self.discriminator.init(d_rng, sample, train=False)

  def prepare_batch(self, images: jax.Array, rng: jax.Array) -> adversarial.Batch:
    masks = self.mask_fn(rng, images.shape[0]).astype(images.dtype)
    return {"real": images, "masks": masks}

  def generate(self, g_variables, batch, rng, train):
    latent_rng, prior_rng = jax.random.split(rng)
    params, stats = g_variables["params"], g_variables.get("batch_stats", {})
    apply = lambda p, *args, method: adversarial.apply_model(
        self.generator, adversarial.variables(p, stats), *args, train=train, method=method)
    (mu, logvar), enc_stats = apply(params, batch["real"], batch["masks"],
                                    method=models.VAEGANGenerator.encode)
    z = models.reparameterize(latent_rng, mu, logvar) if train else mu
    decode = models.VAEGANGenerator.decode
    recon_enc, _ = apply(_stop_decoder(params), z, method=decode)  # -> encoder only
    recon, dec_stats = apply(params, jax.lax.stop_gradient(z), method=decode)  # -> decoder only
    fake = recon
    if self.prior_samples:
      # Fakes are judged in one D call, so D's BatchNorm sees recon and prior together
      # (its running averages get that mixture too).
      # Sharded like mu (the batch axis over devices): concatenation needs equal shardings.
      z_prior = jax.random.normal(prior_rng, mu.shape, mu.dtype,
                                  out_sharding=jax.typeof(mu).sharding)
      prior, _ = apply(params, z_prior, method=decode)
      fake = jnp.concatenate([recon, prior], axis=0)
    new_stats = stats
    if stats:  # each method updates its own half of G's statistics; decode's from `recon`
      new_stats = {**stats, "encoder": enc_stats["encoder"], "decoder": dec_stats["decoder"]}
    outputs = {"fake": fake, "recon": recon, "recon_enc": recon_enc, "mu": mu, "logvar": logvar}
    return outputs, new_stats

  def discriminate(self, d_variables, x, batch, train):
    del batch  # D is unconditional, as in Larsen et al.
    (logits, features), stats = adversarial.apply_model(self.discriminator, d_variables, x,
                                                        train=train)
    return adversarial.DiscriminatorOutput(logits, (features,)), stats

  def generator_step(self, state, batch, outputs, pullback, g_stats):
    # The base's extra-loss hook gets D's outputs on the fake and real batches only; the
    # encoder's feature term needs D on `recon_enc`, so D's variables ride in the batch.
    # They are constants of G's loss (it is differentiated in G's outputs only).
    d = state.discriminator
    batch = {**batch, _D_VARIABLES: adversarial.variables(d.params, d.batch_stats)}
    return super().generator_step(state, batch, outputs, pullback, g_stats)

  def generator_extra_loss(self, outputs, batch, d_fake, d_real):
    del d_fake  # its features mix recon and prior samples; the split needs its own D call
    real, masks = batch["real"], batch["masks"]
    recon_enc, recon = outputs["recon_enc"], outputs["recon"]
    # D in train mode (its statistics discarded), one call per reconstruction: a single call
    # on both would couple them through BatchNorm's batch statistics and leak each
    # network's feature gradient into the other.
    features = lambda x: self.discriminate(batch[_D_VARIABLES], x, batch, True)[0].features[0]
    real_features = d_real.features[0]
    feature_enc = vg_losses.feature_reconstruction_loss(features(recon_enc), real_features,
                                                        self.feature_reduction)
    feature_dec = vg_losses.feature_reconstruction_loss(features(recon), real_features,
                                                        self.feature_reduction)
    pixel = lambda x, region: vg_losses.masked_pixel_loss(x, real, region, self.pixel_loss)
    pixel_terms = lambda x: (self.pixel_weight * pixel(x, masks)
                             + self.hole_pixel_weight * pixel(x, 1.0 - masks))
    kl = jnp.mean(vg_losses.kl_divergence(outputs["mu"], outputs["logvar"]))
    encoder_loss = self.kl_weight * kl + self.feature_weight * feature_enc + pixel_terms(recon_enc)
    decoder_loss = self.decoder_feature_weight * feature_dec + pixel_terms(recon)
    # decoder_loss leaves out the adversarial term, which the base class adds (g_adv).
    terms = {"kl": kl, "feature": feature_dec, "pixel": pixel(recon, masks),
             "hole_pixel": pixel(recon, 1.0 - masks), "encoder_loss": encoder_loss,
             "decoder_loss": decoder_loss}
    return encoder_loss + decoder_loss, terms

  # ---- inference -----------------------------------------------------------------------------

  def _g_variables(self, state: adversarial.GANState) -> adversarial.Variables:
    g = state.generator
    return adversarial.variables(g.params, g.batch_stats)

  def inpaint(self, state: adversarial.GANState, images: jax.Array, masks: jax.Array,
              rng: jax.Array) -> dict[str, jax.Array]:
    """'composite' and 'raw' decode z = mu (Larsen's test-time choice); 'sample' is the
    composite of one draw z ~ q(z | x_masked), to show diversity (not scored)."""
    variables = self._g_variables(state)
    out = self.generator.apply(variables, images, masks, train=False)
    sample = models.sample_completions(self.generator, variables, images, masks, rng, 1)[0]
    return {"composite": image_lib.composite(images, out.generated, masks),
            "raw": out.generated, "sample": sample}

  def sample_completions(self, state: adversarial.GANState, images: jax.Array,
                         masks: jax.Array, rng: jax.Array, num_samples: int,
                         from_prior: bool = False) -> jax.Array:
    """Several completions per input: [num_samples, B, H, W, C], known pixels kept.

    See :func:`jaxpaint.models.vaegan.sample_completions`; ``from_prior`` draws z ~ N(0, I)
    instead of q(z | x_masked).
    """
    return models.sample_completions(self.generator, self._g_variables(state), images, masks,
                                     rng, num_samples, from_prior)


def build_task(config: ml_collections.ConfigDict, mask_fn: MaskFn, channels: int,
               previous: dict) -> VAEGANTask:
  """The task from ``config.model``, ``config.loss``, ``config.learning_rate`` (G and D),
  ``config.optimizer``, ``config.image_size`` and ``config.compute_dtype``."""
  del previous
  from jaxpaint import optim, steps  # noqa: PLC0415 (steps/__init__ imports task modules lazily)
  m, l = config.model, config.loss
  dtype = steps.compute_dtype(config)
  generator = models.VAEGANGenerator(
      image_size=config.image_size, out_channels=channels, latent_dim=m.latent_dim,
      encoder_features=tuple(m.encoder_features), encoder_hidden=m.encoder_hidden,
      decoder_features=tuple(m.decoder_features), kernel_size=m.kernel_size, dtype=dtype)
  discriminator = models.VAEGANDiscriminator(
      first_features=m.d_first_features, features=tuple(m.d_features), hidden=m.d_hidden,
      kernel_size=m.kernel_size, feature_layer=m.feature_layer, dtype=dtype)
  scale = 2 ** len(m.decoder_features)
  if config.image_size % scale:
    raise ValueError(f"config.image_size={config.image_size} is not divisible by "
                     f"2**len(config.model.decoder_features) = {scale}; change one of them.")
  return VAEGANTask(
      generator, discriminator, optim.create_optimizer(config), optim.create_optimizer(config),
      mask_fn, kl_weight=l.kl_weight, feature_weight=l.feature_weight,
      decoder_feature_weight=l.decoder_feature_weight, pixel_weight=l.pixel_weight,
      hole_pixel_weight=l.hole_pixel_weight, adv_weight=l.adv_weight, pixel_loss=l.pixel_loss,
      feature_reduction=l.feature_reduction, prior_samples=l.prior_samples, gan_kind=l.gan,
      lsgan_a=l.lsgan_a, lsgan_b=l.lsgan_b, lsgan_c=l.lsgan_c)
