"""Pix2Pix inpainting (Isola et al. 2017; seed 000): U-Net G + PatchGAN D, GAN + 100 * L1.

G maps (masked image, mask) to an image; the result shown and scored is the composite
``y = m * x + (1 - m) * G``. Choices for inpainting, where pix2pix's input is the masked
image:

* L1 is taken, as in pix2pix, between G's *raw* output and the target over the *whole*
  image. On known pixels it only teaches G to copy its input, which keeps the raw output
  coherent with the context (no seam when composited) and gives dense supervision.
* D judges (condition, image) pairs, condition = masked image + mask. By default it sees
  the *composite* as the fake (``d_input='composite'``): known pixels are then identical
  in real and fake pairs, so D's capacity goes to the hole and its border, which is what
  is evaluated. ``d_input='raw'`` is pix2pix verbatim (D sees G's raw output).
* Jitter (resize to ``jitter_size``, per-example random crop back, random horizontal
  flip) runs on device in the step, before the masks are drawn, so image, mask and
  condition stay aligned. ``jitter_size=0`` disables it; pix2pix uses 286 at 256, i.e.
  ``round(size * 286 / 256)`` for other sizes.
* Evaluation (:meth:`Pix2PixTask.inpaint`) runs G in eval mode: running BatchNorm
  statistics, no dropout. (pix2pix's test script keeps train mode by default; ours is
  deterministic.)
"""

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxpaint import images as image_lib
from jaxpaint.models import pix2pix as models
from jaxpaint.steps import adversarial

MaskFn = Callable[[jax.Array, int], jax.Array]
D_INPUTS = ("composite", "raw")


def default_config() -> ml_collections.ConfigDict:
  """Pix2Pix's settings: ``model``, ``loss``, ``optimizer`` sub-dicts and top-level keys.

  ``optimizer`` is :func:`jaxpaint.optim.default_config` with pix2pix's Adam beta1 0.5 and
  constant-then-linear-decay schedule; set ``optimizer.decay_start_step`` (pix2pix: half of
  ``num_train_steps``). Both G and D use it.
  """
  from jaxpaint import optim  # noqa: PLC0415
  optimizer = optim.default_config()
  optimizer.b1 = 0.5
  optimizer.schedule = "linear_decay"
  return ml_collections.ConfigDict(dict(
      model=dict(name="pix2pix", num_downs=8, base_features=64, dropout_rate=0.5,
                 d_base_features=64, d_layers=3, d_input="composite"),
      loss=dict(gan="vanilla", lambda_l1=100.0, d_loss_scale=0.5,
                lsgan_a=0.0, lsgan_b=1.0, lsgan_c=1.0),
      learning_rate=2e-4,
      optimizer=optimizer,
      jitter_size=286,
  ))


def random_jitter(images: jax.Array, rng: jax.Array, jitter_size: int) -> jax.Array:
  """pix2pix's augmentation: images [B, H, W, C] -> [B, H, W, C].

  Resizes (bicubic) to height ``jitter_size`` (width scaled alike), crops a random H x W
  window per example and flips each example horizontally with probability 1/2.
  ``jitter_size=0`` returns the images unchanged.
  """
  if not jitter_size:
    return images
  b, h, w, c = images.shape
  if jitter_size < h:
    raise ValueError(f"jitter_size={jitter_size} must be 0 (off) or >= the image height {h}.")
  jh, jw = jitter_size, round(w * jitter_size / h)
  if (jh, jw) != (h, w):
    images = jnp.clip(jax.image.resize(images, (b, jh, jw, c), method="cubic"), -1.0, 1.0)
  y_rng, x_rng, flip_rng = jax.random.split(rng, 3)
  tops = jax.random.randint(y_rng, (b,), 0, jh - h + 1)
  lefts = jax.random.randint(x_rng, (b,), 0, jw - w + 1)
  crop = lambda image, top, left: jax.lax.dynamic_slice(image, (top, left, 0), (h, w, c))
  images = jax.vmap(crop)(images, tops, lefts)
  flip = jax.random.bernoulli(flip_rng, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


class Pix2PixTask(adversarial.AdversarialTask):
  """Pix2Pix as an :class:`~jaxpaint.steps.adversarial.AdversarialTask`.

  Args:
    generator: G(images, masks, train) -> [B, H, W, C] in [-1, 1] (holes blanked inside).
    discriminator: D(concat(masked image, mask, image), train) -> (logits, features).
    g_tx, d_tx: the two optimisers (pix2pix: Adam 2e-4, beta1 0.5, linear decay).
    mask_fn: (key, batch_size) -> masks [B, H, W, 1], 1 = known.
    gan_kind, d_loss_scale, lsgan_*: see :class:`AdversarialTask`.
    lambda_l1: weight of the L1 term (100).
    jitter_size: see :func:`random_jitter`.
    d_input: 'composite' or 'raw', what D sees as fake (module docstring).
  """

  eval_outputs = ("composite", "raw")

  def __init__(self, generator: models.UNetGenerator, discriminator: models.PatchDiscriminator,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               mask_fn: MaskFn, *, gan_kind: str = "vanilla", lambda_l1: float = 100.0,
               d_loss_scale: float = 0.5, lsgan_a: float = 0.0, lsgan_b: float = 1.0,
               lsgan_c: float = 1.0, jitter_size: int = 0, d_input: str = "composite"):
    super().__init__(g_tx, d_tx, gan_kind=gan_kind, adv_weight=1.0, d_loss_scale=d_loss_scale,
                     lsgan_a=lsgan_a, lsgan_b=lsgan_b, lsgan_c=lsgan_c)
    if d_input not in D_INPUTS:
      raise ValueError(f"d_input={d_input!r}; choose one of {D_INPUTS}.")
    if jitter_size < 0:
      raise ValueError(f"jitter_size={jitter_size} must be 0 (off) or >= the image size.")
    self.generator, self.discriminator, self.mask_fn = generator, discriminator, mask_fn
    self.lambda_l1, self.jitter_size, self.d_input = lambda_l1, jitter_size, d_input

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, mask_fn: MaskFn,
                  channels: int = 3) -> "Pix2PixTask":
    """Builds the task from ``config.model``, ``config.loss``, ``config.learning_rate``,
    ``config.optimizer`` (:mod:`jaxpaint.optim`, used by G and D), ``config.jitter_size``
    and ``config.compute_dtype``; ``channels`` is the images' channel count."""
    from jaxpaint import optim, steps  # noqa: PLC0415 (steps/__init__ imports this module's users)
    m, l = config.model, config.loss
    dtype = steps.compute_dtype(config)
    generator = models.UNetGenerator(out_channels=channels, num_downs=m.num_downs,
                                     base_features=m.base_features, dropout_rate=m.dropout_rate,
                                     dtype=dtype)
    discriminator = models.PatchDiscriminator(base_features=m.d_base_features,
                                              num_layers=m.d_layers, dtype=dtype)
    return cls(generator, discriminator, optim.create_optimizer(config), optim.create_optimizer(config),
               mask_fn, gan_kind=l.gan, lambda_l1=l.lambda_l1, d_loss_scale=l.d_loss_scale,
               lsgan_a=l.lsgan_a, lsgan_b=l.lsgan_b, lsgan_c=l.lsgan_c,
               jitter_size=config.jitter_size, d_input=m.get("d_input", "composite"))

  def init_models(self, rng: jax.Array, images: jax.Array):
    _, h, w, c = images.shape
    if c != self.generator.out_channels:
      raise ValueError(f"Images have {c} channels but the generator makes "
                       f"{self.generator.out_channels}; build the task with channels={c}.")
    g_rng, d_rng = jax.random.split(rng)
    sample = jnp.zeros((1, h, w, c), jnp.float32)
    masks = jnp.ones((1, h, w, 1), jnp.float32)
    g_vars = self.generator.init(g_rng, sample, masks, train=False)
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1, h, w, 2 * c + 1), jnp.float32), train=False)
    return g_vars, d_vars

  def prepare_batch(self, images: jax.Array, rng: jax.Array) -> adversarial.Batch:
    jitter_rng, mask_rng = jax.random.split(rng)
    real = random_jitter(images, jitter_rng, self.jitter_size)
    masks = self.mask_fn(mask_rng, images.shape[0]).astype(real.dtype)
    return {"real": real, "masks": masks, "condition": self._condition(real, masks)}

  @staticmethod
  def _condition(images: jax.Array, masks: jax.Array) -> jax.Array:
    return jnp.concatenate([image_lib.apply_mask(images, masks), masks], axis=-1)

  def generate(self, g_variables, batch, rng, train):
    raw, stats = adversarial.apply_model(self.generator, g_variables, batch["real"], batch["masks"],
                                         train=train, rngs={"dropout": rng})
    composite = image_lib.composite(batch["real"], raw, batch["masks"])
    return {"fake": composite if self.d_input == "composite" else raw, "raw": raw}, stats

  def discriminate(self, d_variables, x, batch, train):
    pair = jnp.concatenate([batch["condition"], x.astype(batch["condition"].dtype)], axis=-1)
    (logits, features), stats = adversarial.apply_model(self.discriminator, d_variables, pair, train=train)
    return adversarial.DiscriminatorOutput(logits, features), stats

  def generator_extra_loss(self, outputs, batch, d_fake, d_real):
    del d_fake, d_real
    diff = jnp.abs(outputs["raw"] - batch["real"])
    hole = jnp.broadcast_to(1.0 - batch["masks"], diff.shape)
    l1 = jnp.mean(diff)
    l1_hole = jnp.sum(hole * diff) / jnp.maximum(jnp.sum(hole), 1.0)
    return self.lambda_l1 * l1, {"l1": l1, "l1_hole": l1_hole}

  def inpaint(self, state: adversarial.GANState, images: jax.Array, masks: jax.Array,
              rng: jax.Array) -> dict[str, jax.Array]:
    del rng  # eval mode is deterministic
    g = state.generator
    raw = self.generator.apply(adversarial.variables(g.params, g.batch_stats), images, masks, train=False)
    return {"composite": image_lib.composite(images, raw, masks), "raw": raw}


def build_task(config: ml_collections.ConfigDict, mask_fn: MaskFn, channels: int, previous: dict) -> Pix2PixTask:
  """The registry's entry point (``config.model.name == 'pix2pix'``)."""
  del previous
  return Pix2PixTask.from_config(config, mask_fn, channels)
