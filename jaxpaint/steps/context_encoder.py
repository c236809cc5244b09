"""Context Encoders (Pathak et al. 2016) as an adversarial task: predict the centre patch.

Training follows Pathak's ``train.lua`` (the centre-inpainting setting):

* Every image gets the same hole: the centred ``patch_size`` square shrunk by ``overlap``
  pixels per side (:func:`~jaxpaint.models.context_encoder.centre_hole_masks`; 56 of a 64
  patch at 128). The hole is filled with a mean colour at G's input; G predicts the whole
  patch, so it also predicts a thin ring of known pixels, which the L2 weights x10.
* D judges the patch alone: ``batch['real']`` is the true centre patch, the fake is G's
  patch (conditionAdv=0). Vanilla BCE GAN, D's real and fake terms summed.
* G's loss is ``rec_weight * L2_overlap_weighted + adv_weight * BCE(D(G), real)``, the
  paper's 0.999 and 0.001.
* G's learning rate is ``g_lr_multiplier`` times D's: ``train.lua`` trains G 10x faster
  when 0 < wtl2 < 1, so that is the default when the config does not say.
* One difference: train.lua's G step reuses D's output from before D's update; here, as
  in every :class:`~jaxpaint.steps.adversarial.AdversarialTask`, G is scored by the
  updated D.

``config.mask`` must describe that same hole (kind 'centre', size ``patch_size - 2 *
overlap``): the task draws no random masks, and the driver's evaluator scores
``config.eval_mask or config.mask``, so the config then tells the truth about what the
model was trained and is scored on. :meth:`ContextEncoderTask.inpaint` takes any mask;
holes outside the predicted patch keep the mean-colour fill.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxpaint.losses import context_encoder as ce_losses
from jaxpaint.models import context_encoder as models
from jaxpaint.steps import adversarial

MaskFn = Callable[[jax.Array, int], jax.Array]

# config.model.mean_colour -> the fill passed to the model (see fill_holes_with_mean).
MEAN_COLOURS = {"pathak": models.PATHAK_MEAN_COLOUR, "zero": 0.0, "image": None}


def default_config() -> ml_collections.ConfigDict:
  """Pathak's settings at 128x128: ``model``, ``loss``, ``optimizer`` and top-level keys.

  ``g_lr_multiplier``: G's learning rate over ``learning_rate`` (D's); Pathak's rule gives
  10 for 0 < rec_weight < 1. The mask to pair with it is a centre square of
  ``patch_size - 2 * overlap`` (:func:`hole_size`).
  """
  from jaxpaint import optim  # noqa: PLC0415
  optimizer = optim.default_config()
  optimizer.b1 = 0.5
  return ml_collections.ConfigDict(dict(
      model=dict(name="context_encoder", patch_size=64, overlap=4, bottleneck=4000, features=64,
                 d_features=64, mean_colour="pathak"),
      loss=dict(gan="vanilla", rec_weight=0.999, adv_weight=0.001, overlap_weight=10.0,
                normalization="elements", lsgan_a=0.0, lsgan_b=1.0, lsgan_c=1.0),
      learning_rate=2e-4,
      g_lr_multiplier=10.0,
      optimizer=optimizer,
  ))


def hole_size(patch_size: int, overlap: int) -> int:
  """Side of the centre hole: the predicted patch less its overlap ring."""
  return patch_size - 2 * overlap


def check_mask_config(mask_config, image_size: int, patch_size: int, overlap: int) -> None:
  """Raises ValueError unless ``config.mask`` is the centre hole this task trains on.

  Same size means same pixels: masks.centre_square starts at ``S // 2 - size // 2``, the
  model module at ``(S - p) // 2 + overlap``, equal for the even (power-of-two) S and p.
  """
  models.check_geometry(image_size, patch_size, overlap)
  want = hole_size(patch_size, overlap)
  kind, size = mask_config.get("kind"), mask_config.get("size", 0)
  if size == 0:  # masks.py: 0 = half the image side
    size = image_size // 2
  if kind != "centre" or size != want:
    raise ValueError(
        f"Context Encoders train on one centred {want}x{want} hole (patch_size={patch_size} "
        f"less overlap={overlap} per side); config.mask is {dict(mask_config.items())!r}. Set "
        f"config.mask.kind='centre' and config.mask.size={want} (evaluate on other holes "
        "with config.eval_mask).")


class ContextEncoderTask(adversarial.AdversarialTask):
  """Context Encoders as an :class:`~jaxpaint.steps.adversarial.AdversarialTask`.

  Args:
    generator: (images, masks, train) -> centre patch [B, p, p, C].
    discriminator: patches [B, p, p, C] -> logits [B].
    g_tx, d_tx: the optimisers (Pathak: Adam beta1 0.5, G at 10x D's rate).
    overlap: ring of known pixels inside the predicted patch.
    rec_weight, adv_weight: 0.999 and 0.001.
    overlap_weight: L2 weight of the ring (10).
    normalization: 'elements' (Pathak) or 'weights', see :mod:`jaxpaint.losses.context_encoder`.
    gan_kind, lsgan_*: see :class:`AdversarialTask`.
  """

  eval_outputs = ("composite",)

  def __init__(self, generator: models.ContextEncoder, discriminator: models.ContextDiscriminator,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation, *,
               overlap: int = 4, rec_weight: float = 0.999, adv_weight: float = 0.001,
               overlap_weight: float = 10.0, normalization: str = "elements",
               gan_kind: str = "vanilla", lsgan_a: float = 0.0, lsgan_b: float = 1.0,
               lsgan_c: float = 1.0):
    super().__init__(g_tx, d_tx, gan_kind=gan_kind, adv_weight=adv_weight, d_loss_scale=1.0,
                     lsgan_a=lsgan_a, lsgan_b=lsgan_b, lsgan_c=lsgan_c)
    if normalization not in ce_losses.NORMALIZATIONS:
      raise ValueError(f"normalization={normalization!r}; choose one of {ce_losses.NORMALIZATIONS}.")
    if rec_weight < 0 or adv_weight < 0:
      raise ValueError(f"rec_weight={rec_weight} and adv_weight={adv_weight} must be >= 0.")
    self.generator, self.discriminator = generator, discriminator
    self.patch_size, self.overlap = generator.patch_size, overlap
    self.rec_weight, self.normalization = rec_weight, normalization
    # A constant [p, p, 1] (NumPy, so it is baked into the jitted step).
    self.weights = ce_losses.reconstruction_weights(self.patch_size, overlap, overlap_weight)

  def training_masks(self, batch_size: int, image_size: int) -> jax.Array:
    """The fixed training masks [B, S, S, 1]: the centre patch less its overlap ring."""
    return models.centre_hole_masks(batch_size, image_size, self.patch_size, self.overlap)

  def init_models(self, rng: jax.Array, images: jax.Array):
    _, h, w, c = images.shape
    if h != w:
      raise ValueError(f"Context Encoders need square images; got {h}x{w}.")
    models.check_geometry(h, self.patch_size, self.overlap)
    out = self.generator.out_channels or c
    if out != c:
      raise ValueError(f"Images have {c} channels but the generator makes {out}; build the "
                       f"task with channels={c}.")
    g_rng, d_rng = jax.random.split(rng)
    g_vars = self.generator.init(g_rng, jnp.zeros((1, h, w, c), jnp.float32),
                                 jnp.ones((1, h, w, 1), jnp.float32), train=False)
    patch = jnp.zeros((1, self.patch_size, self.patch_size, c), jnp.float32)
    return g_vars, self.discriminator.init(d_rng, patch, train=False)

  def prepare_batch(self, images: jax.Array, rng: jax.Array) -> adversarial.Batch:
    del rng  # the hole is fixed and there is no jitter
    masks = self.training_masks(images.shape[0], images.shape[1]).astype(images.dtype)
    return {"real": models.crop_patch(images, self.patch_size), "images": images, "masks": masks}

  def generate(self, g_variables, batch, rng, train):
    del rng  # no dropout, no noise (noiseGen=0)
    patch, stats = adversarial.apply_model(self.generator, g_variables, batch["images"],
                                           batch["masks"], train=train)
    return {"fake": patch}, stats

  def discriminate(self, d_variables, x, batch, train):
    del batch  # D sees the patch without its context
    logits, stats = adversarial.apply_model(self.discriminator, d_variables, x, train=train)
    return adversarial.DiscriminatorOutput(logits), stats

  def generator_extra_loss(self, outputs, batch, d_fake, d_real):
    del d_fake, d_real
    pred, true = outputs["fake"], batch["real"]
    rec = ce_losses.weighted_l2(pred, true, self.weights, self.normalization)
    sq = jnp.square(pred.astype(jnp.float32) - true.astype(jnp.float32))
    o, p = self.overlap, self.patch_size
    l2, hole_l2 = jnp.mean(sq), jnp.mean(sq[:, o:p - o, o:p - o])
    return self.rec_weight * rec, {"rec": rec, "l2": l2, "hole_l2": hole_l2}

  def predict_patch(self, state: adversarial.GANState, images: jax.Array,
                    masks: jax.Array) -> jax.Array:
    """G in eval mode: images [B, S, S, C], masks [B, S, S, 1] -> patch [B, p, p, C]."""
    g = state.generator
    return self.generator.apply(adversarial.variables(g.params, g.batch_stats), images, masks,
                                train=False)

  def inpaint(self, state: adversarial.GANState, images: jax.Array, masks: jax.Array,
              rng: jax.Array) -> dict[str, jax.Array]:
    """'composite': the predicted patch pasted into the hole, known pixels kept; 'raw': the
    whole predicted patch (ring included) pasted onto the mean-filled input."""
    del rng  # deterministic in eval mode
    patch = self.predict_patch(state, images, masks)
    # Built from the filled input, never the clean image: hole pixels outside the patch
    # region must not show the target.
    filled = models.fill_holes_with_mean(images, masks, self.generator.mean_colour)
    return {"composite": models.composite_patch(filled, patch, masks),
            "raw": models.paste_patch(filled, patch)}


def build_task(config: ml_collections.ConfigDict, mask_fn: MaskFn, channels: int,
               previous: dict) -> ContextEncoderTask:
  """The task from ``config.model``, ``config.loss``, ``config.learning_rate`` (D's),
  ``config.g_lr_multiplier``, ``config.optimizer`` and ``config.compute_dtype``.

  ``mask_fn`` is not used: the hole is fixed, and ``config.mask`` must describe it
  (:func:`check_mask_config`).
  """
  del mask_fn, previous
  from jaxpaint import optim, steps  # noqa: PLC0415 (steps/__init__ imports task modules lazily)
  m, l = config.model, config.loss
  if m.mean_colour not in MEAN_COLOURS:
    raise ValueError(f"config.model.mean_colour={m.mean_colour!r}; choose one of "
                     f"{tuple(MEAN_COLOURS)}.")
  check_mask_config(config.mask, config.image_size, m.patch_size, m.overlap)
  dtype = steps.compute_dtype(config)
  generator = models.ContextEncoder(patch_size=m.patch_size, out_channels=channels,
                                    bottleneck=m.bottleneck, features=m.features,
                                    mean_colour=MEAN_COLOURS[m.mean_colour], dtype=dtype)
  discriminator = models.ContextDiscriminator(features=m.d_features, dtype=dtype)
  multiplier = config.get("g_lr_multiplier", None)
  if multiplier is None:  # train.lua: G at 10x when the L2 and adversarial terms are mixed
    multiplier = 10.0 if 0 < l.rec_weight < 1 else 1.0
  if multiplier <= 0:
    raise ValueError(f"config.g_lr_multiplier={multiplier} must be > 0.")
  g_tx = optim.create_optimizer(config, learning_rate=config.learning_rate * multiplier)
  return ContextEncoderTask(
      generator, discriminator, g_tx, optim.create_optimizer(config), overlap=m.overlap,
      rec_weight=l.rec_weight, adv_weight=l.adv_weight, overlap_weight=l.overlap_weight,
      normalization=l.normalization, gan_kind=l.gan, lsgan_a=l.lsgan_a, lsgan_b=l.lsgan_b,
      lsgan_c=l.lsgan_c)
