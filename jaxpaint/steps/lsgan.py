"""Seed 003: LSGAN semantic inpainting, then an AutoEncoder refiner, as two stages of one run.

``configs/lsgan.py`` sets ``config.stages = ("gan", "refiner")``; the driver trains them in
order and :func:`build_task` picks the task by ``config.stage``:

1. ``'gan'`` -> :class:`LSGANTask`: an unconditional DCGAN (:mod:`jaxpaint.models.dcgan`)
   trained as a least-squares GAN on the shared adversarial machinery. It never sees a mask
   while training. It inpaints by semantic inpainting (Yeh et al. 2017,
   :mod:`jaxpaint.latent_search`): with G and D frozen in eval mode (BatchNorm running
   averages), search z so that G(z) agrees with the known pixels and D finds it real; the
   hole is filled from G(z_best) (``'lsgan'``, the seed's "LSGAN" row).
2. ``'refiner'`` -> :class:`RefinerTask`: the seed's AutoEncoder
   (:mod:`jaxpaint.models.refiner`) learns to map the stage-1 completion to the ground
   truth (MSE over the whole image, as in the seed); the result is
   ``M * y + (1 - M) * AE(completion)`` (``'refined'``, the seed's "LSGAN+AutoEncoder").
   Every refiner step draws masks and runs a (shorter) latent search with the frozen GAN.

Choices (``config.latent_search``, ``config.loss``, ``config.model``; see
:func:`default_config`):

* z for training G is uniform in [-1, 1]^latent_dim (``model.latent_distribution``), the box
  the latent search starts in and clips to, so the search explores exactly the prior G was
  trained on. ``'normal'`` (DCGAN's PyTorch code) is available; the search still starts
  uniform in [-1, 1] then, and clipping at 1 cuts off a third of each coordinate's prior.
* LSGAN labels ``a, b, c = 0, 1, 1`` (Mao et al.'s 0-1 coding, also pix2pix's LSGAN mode;
  ``-1, 1, 0`` is their other scheme). The search's perceptual term is G's own adversarial
  loss, ``1/2 (D(G(z)) - c)^2`` (:func:`~jaxpaint.latent_search.lsgan_perceptual`); the
  seed writes Yeh's ``log(1 - D(G(z)))``, which is what ``loss.gan = 'vanilla'`` uses.
* ``lam = 0.1`` weighs the perceptual term as in Yeh et al.'s code; the seed used 10.
  ``window = 7`` is Yeh's importance weighting; 0 gives the seed's plain ``||M (G(z) - y)||_1``.
* The refiner trains on completions from ``train_num_candidates`` x ``train_num_steps``
  search iterations per image (default 1 x 100, where the seed saw the search loss
  flatten), not the evaluation's ``num_candidates`` x ``num_steps`` (8 x 1000, Yeh): every
  step costs ``batch * candidates * steps`` passes through G and D and back, so evaluation
  settings would make a refiner step ~80x dearer. The refiner then sees rougher
  completions in training than at evaluation; raise the two to narrow that gap.

The frozen GAN inside the refiner stage: ``previous['gan']`` (the final
:class:`~jaxpaint.steps.adversarial.GANState` of stage 1) is copied, without its optimiser
state, into :class:`RefinerState` as a non-trainable field, so that the jitted train and
eval steps take it as an argument. Closed over instead, its ~60 MB (G and D at 64x64) would be
baked into every executable as constants: measured on CPU, 124 MB of HLO per executable and
XLA constant-folding G's kernels (">1 s" alarms in the log), for about the same compile time
(within the noise of a loaded 2-core machine, 0-2 s more). Only the one-off jitted
``init_state`` embeds them (~4 s). The cost: the refiner's checkpoints also hold that copy of
G and D (~60 MB each), which makes a refiner checkpoint self-contained; a resumed refiner keeps
the GAN it was trained with even if stage 1 was trained further since.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxpaint import images as image_lib
from jaxpaint import latent_search as search_lib
from jaxpaint.stages import stage_config
from jaxpaint.models import dcgan
from jaxpaint.models import refiner as refiner_lib
from jaxpaint.steps import adversarial, base
from jaxpaint.steps.reconstruction import TrainState

MaskFn = Callable[[jax.Array, int], jax.Array]
STAGES = ("gan", "refiner")
LATENT_DISTRIBUTIONS = ("uniform", "normal")
SEARCH_OPTIMIZERS = ("adam", "nesterov")
GAN_KINDS = ("lsgan", "vanilla")  # kinds with a matching perceptual loss for the search


def default_config() -> ml_collections.ConfigDict:
  """Seed 003's settings: ``model``, ``loss``, ``latent_search``, ``optimizer``, ``learning_rate``.

  ``optimizer`` is DCGAN's Adam (2e-4, beta1 0.5), used by G and D; a staged config gives
  the refiner its own rate and beta1 through ``stage_overrides`` (``configs/lsgan.py``).
  """
  from jaxpaint import optim  # noqa: PLC0415 (steps/__init__ imports task modules lazily)
  optimizer = optim.default_config()
  optimizer.b1 = 0.5
  return ml_collections.ConfigDict(dict(
      model=dict(
          name="lsgan",
          latent_dim=100,              # z in R^100 (DCGAN, seed 003)
          latent_distribution="uniform",
          g_base_features=1024,        # 4x4x1024 -> ... -> 64x64x3 (seed 003's table)
          d_base_features=64,          # 64 -> 128 -> 256 -> 512
          d_layers=4,                  # 64x64 -> 4x4x512 = 8192 features (seed 003)
          kernel_size=4,               # 4: PyTorch DCGAN; 5: TF DCGAN / Yeh's code
          refiner_features=(64, 128, 256, 512),  # 4 levels, 4x4x512 = 8192 bottleneck (seed)
          refiner_kernel_size=3,
      ),
      loss=dict(gan="lsgan", lsgan_a=0.0, lsgan_b=1.0, lsgan_c=1.0),
      learning_rate=2e-4,
      optimizer=optimizer,
      latent_search=dict(
          num_candidates=8,            # latents optimised per image at evaluation; best kept
          num_steps=1000,              # Yeh et al.: ~1000 iterations
          learning_rate=0.01,          # Yeh et al.'s code (Adam)
          lam=0.1,                     # Yeh et al.'s code; seed 003 used 10
          optimizer="adam",            # or 'nesterov' (momentum 0.9)
          window=7,                    # importance-weight window; 0 = plain mask (seed 003)
          clip=1.0,                    # z clipped to [-clip, clip]; 0 = no clipping
          train_num_candidates=1,      # per refiner train step (see the module docstring)
          train_num_steps=100,
      ),
  ))


def _check_int(value: Any, what: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"config.{what}={value!r} must be an integer >= {minimum}.")
  return value


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """``config.latent_search``, checked; see :func:`default_config` for the meanings."""

  num_candidates: int = 8
  num_steps: int = 1000
  learning_rate: float = 0.01
  lam: float = 0.1
  optimizer: str = "adam"
  window: int = 7
  clip: float = 1.0
  train_num_candidates: int = 1
  train_num_steps: int = 100

  def __post_init__(self):
    for name in ("num_candidates", "train_num_candidates"):
      _check_int(getattr(self, name), f"latent_search.{name}")
    for name in ("num_steps", "train_num_steps"):
      _check_int(getattr(self, name), f"latent_search.{name}", minimum=0)
    if not self.learning_rate > 0:
      raise ValueError(f"config.latent_search.learning_rate={self.learning_rate} must be > 0.")
    if not self.lam >= 0:
      raise ValueError(f"config.latent_search.lam={self.lam} must be >= 0.")
    if not self.clip >= 0:
      raise ValueError(f"config.latent_search.clip={self.clip} must be >= 0 (0 = no clipping).")
    if self.optimizer not in SEARCH_OPTIMIZERS:
      raise ValueError(f"config.latent_search.optimizer={self.optimizer!r}; choose one of "
                       f"{SEARCH_OPTIMIZERS}.")
    if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0 or (
        self.window and self.window % 2 == 0):
      raise ValueError(f"config.latent_search.window={self.window!r} must be 0 (no importance "
                       "weighting) or an odd positive integer (Yeh et al.: 7).")

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "SearchSettings":
    given = dict(config.get("latent_search") or {})
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"Unknown config.latent_search keys {unknown}; known: "
                       f"{sorted(f.name for f in dataclasses.fields(cls))}.")
    return cls(**given)


FrozenGAN = dict[str, adversarial.Variables]  # {'generator': variables, 'discriminator': variables}


def frozen_gan(state: adversarial.GANState) -> FrozenGAN:
  """G's and D's variables (params and BatchNorm statistics) without their optimiser state."""
  g, d = state.generator, state.discriminator
  return {"generator": adversarial.variables(g.params, g.batch_stats),
          "discriminator": adversarial.variables(d.params, d.batch_stats)}


class SemanticInpainter:
  """Yeh et al.'s latent search with a frozen G and D in eval mode.

  Args:
    generator: z [N, latent_dim] -> images [N, H, W, C].
    discriminator: images -> logits [N].
    settings: the search's settings.
    perceptual_fn: logits [N] -> per-example perceptual loss [N].
  """

  def __init__(self, generator: dcgan.Generator, discriminator: dcgan.Discriminator,
               settings: SearchSettings, perceptual_fn: Callable[[jax.Array], jax.Array]):
    self.generator, self.discriminator = generator, discriminator
    self.settings, self.perceptual_fn = settings, perceptual_fn

  def search(self, gan: FrozenGAN, images: jax.Array, masks: jax.Array, rng: jax.Array, *,
             training: bool = False) -> dict[str, jax.Array]:
    """:func:`jaxpaint.latent_search.latent_search`'s outputs for images [B, H, W, C].

    Holes are blanked before the search (they carry no weight in it anyway). ``training``
    selects the cheaper ``train_num_*`` settings of a refiner train step.
    """
    s = self.settings
    k, n = (s.train_num_candidates, s.train_num_steps) if training else (s.num_candidates, s.num_steps)
    generate = lambda z: self.generator.apply(gan["generator"], z, train=False)
    discriminate = lambda x: self.discriminator.apply(gan["discriminator"], x, train=False)
    return search_lib.latent_search(
        generate, discriminate, image_lib.apply_mask(images, masks), masks, rng,
        num_candidates=k, num_steps=n, learning_rate=s.learning_rate, lam=s.lam,
        perceptual_fn=self.perceptual_fn, latent_dim=self.generator.latent_dim,
        optimizer=s.optimizer, clip=s.clip or None, window=s.window or None)


class LSGANTask(adversarial.AdversarialTask):
  """Stage 1: an unconditional DCGAN trained as an LSGAN; inpaints by latent search.

  Args:
    generator, discriminator: the DCGAN pair.
    g_tx, d_tx: their optimisers (DCGAN: Adam 2e-4, beta1 0.5).
    inpainter: the latent search, with ``generator`` and ``discriminator``.
    latent_distribution: 'uniform' ([-1, 1]) or 'normal' prior of z while training G.
    gan_kind, lsgan_*: see :class:`~jaxpaint.steps.adversarial.AdversarialTask`.
  """

  eval_outputs = ("lsgan",)

  def __init__(self, generator: dcgan.Generator, discriminator: dcgan.Discriminator,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               inpainter: SemanticInpainter, *, latent_distribution: str = "uniform",
               gan_kind: str = "lsgan", lsgan_a: float = 0.0, lsgan_b: float = 1.0,
               lsgan_c: float = 1.0):
    super().__init__(g_tx, d_tx, gan_kind=gan_kind, lsgan_a=lsgan_a, lsgan_b=lsgan_b,
                     lsgan_c=lsgan_c)
    if latent_distribution not in LATENT_DISTRIBUTIONS:
      raise ValueError(f"latent_distribution={latent_distribution!r}; choose one of "
                       f"{LATENT_DISTRIBUTIONS}.")
    self.generator, self.discriminator, self.inpainter = generator, discriminator, inpainter
    self.latent_distribution = latent_distribution

  def init_models(self, rng: jax.Array, images: jax.Array):
    _check_images(self.generator, images)
    g_rng, d_rng = jax.random.split(rng)
    z = jnp.zeros((1, self.generator.latent_dim), jnp.float32)
    g_vars = self.generator.init(g_rng, z, train=False)
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1,) + images.shape[1:], jnp.float32), train=False)
    return g_vars, d_vars

  def sample_latents(self, rng: jax.Array, batch_size: int) -> jax.Array:
    """z [batch_size, latent_dim] from the training prior."""
    shape = (batch_size, self.generator.latent_dim)
    if self.latent_distribution == "uniform":
      return jax.random.uniform(rng, shape, jnp.float32, -1.0, 1.0)
    return jax.random.normal(rng, shape, jnp.float32)

  def prepare_batch(self, images: jax.Array, rng: jax.Array) -> adversarial.Batch:
    return {"real": images, "z": self.sample_latents(rng, images.shape[0])}

  def generate(self, g_variables, batch, rng, train):
    del rng  # no dropout in the DCGAN generator
    fake, stats = adversarial.apply_model(self.generator, g_variables, batch["z"], train=train)
    return {"fake": fake}, stats

  def discriminate(self, d_variables, x, batch, train):
    del batch  # unconditional
    logits, stats = adversarial.apply_model(self.discriminator, d_variables, x, train=train)
    return adversarial.DiscriminatorOutput(logits), stats

  def latent_search(self, state: adversarial.GANState, images: jax.Array, masks: jax.Array,
                    rng: jax.Array, *, training: bool = False) -> dict[str, jax.Array]:
    """The full latent-search outputs (z_best, losses, histories) with this state's G and D."""
    return self.inpainter.search(frozen_gan(state), images, masks, rng, training=training)

  def inpaint(self, state: adversarial.GANState, images: jax.Array, masks: jax.Array,
              rng: jax.Array) -> dict[str, jax.Array]:
    """{'lsgan': M * y + (1 - M) * G(z_best), 'lsgan_raw': G(z_best)}, each [B, H, W, C]."""
    out = self.latent_search(state, images, masks, rng)
    return {"lsgan": out["blended"], "lsgan_raw": out["completion_raw"]}


@flax.struct.dataclass
class RefinerState:
  """The refiner's train state plus the frozen stage-1 GAN (never updated, no optimiser)."""
  refiner: TrainState
  gan: FrozenGAN

  @property
  def step(self) -> jax.Array:
    return self.refiner.step


class RefinerTask(base.Task):
  """Stage 2: trains seed 003's AutoEncoder on latent-search completions, MSE to the target.

  Args:
    refiner: AE [B, H, W, C] -> [B, H, W, C].
    tx: its optimiser.
    mask_fn: (key, batch_size) -> masks [B, H, W, 1] for the training completions.
    inpainter: the latent search, with stage 1's generator and discriminator modules.
    gan: stage 1's frozen variables (:func:`frozen_gan`), copied into the state.
  """

  eval_outputs = ("lsgan", "refined")

  def __init__(self, refiner: refiner_lib.Refiner, tx: optax.GradientTransformation,
               mask_fn: MaskFn, inpainter: SemanticInpainter, gan: FrozenGAN):
    self.refiner, self.tx, self.mask_fn = refiner, tx, mask_fn
    self.inpainter, self.gan = inpainter, gan

  def init_state(self, rng: jax.Array, images: jax.Array) -> RefinerState:
    _check_images(self.inpainter.generator, images)
    variables = self.refiner.init(rng, jnp.zeros((1,) + images.shape[1:], jnp.float32), train=False)
    refiner = TrainState.create(apply_fn=None, params=variables["params"], tx=self.tx,
                                batch_stats=variables.get("batch_stats", {}))
    return RefinerState(refiner=refiner, gan=self.gan)

  def parameters(self, state: RefinerState) -> Any:
    return state.refiner.params

  def train_step(self, state: RefinerState, images: jax.Array, rng: jax.Array
                 ) -> tuple[RefinerState, base.Metrics]:
    mask_rng, search_rng = jax.random.split(rng)
    masks = self.mask_fn(mask_rng, images.shape[0]).astype(images.dtype)
    found = self.inpainter.search(state.gan, images, masks, search_rng, training=True)
    completion = jax.lax.stop_gradient(found["blended"])
    r = state.refiner

    def loss_fn(params):
      out, updates = self.refiner.apply({"params": params, "batch_stats": r.batch_stats},
                                        completion, train=True, mutable=["batch_stats"])
      mse, hole_mse = _mse(out, images, masks)
      return mse, (hole_mse, updates["batch_stats"])

    (mse, (hole_mse, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(r.params)
    _, completion_hole_mse = _mse(completion, images, masks)
    metrics = {"loss": mse, "mse": mse, "hole_mse": hole_mse,
               "completion_hole_mse": completion_hole_mse,
               "search_contextual": jnp.mean(found["contextual_best"]),
               "search_perceptual": jnp.mean(found["perceptual_best"]),
               "grad_norm": optax.global_norm(grads)}
    return state.replace(refiner=r.apply_gradients(grads=grads, batch_stats=stats)), metrics

  def inpaint(self, state: RefinerState, images: jax.Array, masks: jax.Array, rng: jax.Array
              ) -> dict[str, jax.Array]:
    """{'lsgan': the stage-1 completion, 'refined': M * y + (1 - M) * AE(completion)}."""
    completion = self.inpainter.search(state.gan, images, masks, rng)["blended"]
    r = state.refiner
    refined = self.refiner.apply({"params": r.params, "batch_stats": r.batch_stats}, completion,
                                 train=False)
    return {"lsgan": completion, "refined": image_lib.composite(images, refined, masks)}


def _mse(x: jax.Array, target: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean squared error over all pixels, over hole pixels only), float32 scalars."""
  err = jnp.square(x.astype(jnp.float32) - target.astype(jnp.float32))
  hole = jnp.broadcast_to(1.0 - masks.astype(jnp.float32), err.shape)
  return jnp.mean(err), jnp.sum(hole * err) / jnp.maximum(jnp.sum(hole), 1.0)


def _check_images(generator: dcgan.Generator, images: jax.Array) -> None:
  _, h, w, c = images.shape
  if (h, w, c) != (generator.image_size, generator.image_size, generator.channels):
    raise ValueError(f"The generator makes {generator.image_size}x{generator.image_size}x"
                     f"{generator.channels} images but the data are {h}x{w}x{c}; build the task "
                     "with the data's config.image_size and channels.")


# ---- building from config ---------------------------------------------------------------

def check_config(config: ml_collections.ConfigDict) -> SearchSettings:
  """Refuses bad LSGAN settings (model, loss, latent_search) with a ValueError; cheap."""
  from jaxpaint import steps  # noqa: PLC0415
  m = config.model
  steps.compute_dtype(config)  # refuses an unknown dtype
  size = config.image_size
  if size < 8 or size & (size - 1):
    raise ValueError(f"config.image_size={size}: the DCGAN generator makes power-of-two sizes "
                     ">= 8 (seed 003: 64).")
  for key in ("latent_dim", "g_base_features", "d_base_features", "d_layers", "kernel_size",
              "refiner_kernel_size"):
    _check_int(m[key], f"model.{key}")
  if m.latent_distribution not in LATENT_DISTRIBUTIONS:
    raise ValueError(f"config.model.latent_distribution={m.latent_distribution!r}; choose one of "
                     f"{LATENT_DISTRIBUTIONS}.")
  features = tuple(m.refiner_features)
  if not features:
    raise ValueError("config.model.refiner_features is empty; give one feature count per level.")
  for f in features:
    _check_int(f, "model.refiner_features[i]")
  if size % 2 ** len(features):
    raise ValueError(f"config.image_size={size} is not divisible by 2**len(config.model."
                     f"refiner_features) = {2 ** len(features)}; use fewer refiner levels.")
  if config.loss.gan not in GAN_KINDS:
    raise ValueError(f"config.loss.gan={config.loss.gan!r}; the latent search has a perceptual "
                     f"loss for {GAN_KINDS}.")
  if config.loss.gan == "lsgan" and config.loss.lsgan_a == config.loss.lsgan_b:
    raise ValueError(f"config.loss.lsgan_a = lsgan_b = {config.loss.lsgan_a}; LSGAN's labels must differ.")
  return SearchSettings.from_config(config)


def _check_stages(config: ml_collections.ConfigDict) -> None:
  """In a staged config, checks every stage's settings now, before stage 1 trains for hours."""
  stages = tuple(config.get("stages") or ())
  if not stages:
    return
  unknown = [s for s in stages if s not in STAGES]
  if unknown or "gan" not in stages or ("refiner" in stages and stages.index("refiner") < stages.index("gan")):
    raise ValueError(f"config.stages={stages}: the LSGAN stages are {STAGES}, 'gan' first.")
  for stage in stages:
    check_config(stage_config(config, stage))


def _modules(config: ml_collections.ConfigDict, channels: int):
  from jaxpaint import steps  # noqa: PLC0415
  m, dtype = config.model, steps.compute_dtype(config)
  generator = dcgan.Generator(latent_dim=m.latent_dim, image_size=config.image_size,
                              channels=channels, base_features=m.g_base_features,
                              kernel_size=m.kernel_size, dtype=dtype)
  discriminator = dcgan.Discriminator(base_features=m.d_base_features, num_layers=m.d_layers,
                                      kernel_size=m.kernel_size, dtype=dtype)
  return generator, discriminator


def _perceptual_fn(loss: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  if loss.gan == "lsgan":
    return functools.partial(search_lib.lsgan_perceptual, c=float(loss.lsgan_c))
  return search_lib.vanilla_perceptual


def build_task(config: ml_collections.ConfigDict, mask_fn: MaskFn, channels: int,
               previous: dict) -> base.Task:
  """:class:`LSGANTask` for ``config.stage == 'gan'`` (or no stage), :class:`RefinerTask`
  for ``'refiner'`` (needs ``previous['gan']``, stage 1's final GANState)."""
  from jaxpaint import optim, steps  # noqa: PLC0415
  stage = config.get("stage") or "gan"
  if stage not in STAGES:
    raise ValueError(f"config.stage={stage!r}; the LSGAN stages are {STAGES}.")
  settings = check_config(config)
  generator, discriminator = _modules(config, channels)
  inpainter = SemanticInpainter(generator, discriminator, settings, _perceptual_fn(config.loss))
  if stage == "gan":
    _check_stages(config)
    l = config.loss
    return LSGANTask(generator, discriminator, optim.create_optimizer(config),
                     optim.create_optimizer(config), inpainter,
                     latent_distribution=config.model.latent_distribution, gan_kind=l.gan,
                     lsgan_a=l.lsgan_a, lsgan_b=l.lsgan_b, lsgan_c=l.lsgan_c)
  if "gan" not in previous:
    raise ValueError("The 'refiner' stage inpaints with the GAN trained in stage 'gan', but none "
                     "was handed over: keep config.stages=('gan', 'refiner') and train the gan "
                     "stage first (--config.run_stages=gan), or run both stages together.")
  refiner = refiner_lib.Refiner(features=tuple(config.model.refiner_features), channels=channels,
                                kernel_size=config.model.refiner_kernel_size,
                                dtype=steps.compute_dtype(config))
  return RefinerTask(refiner, optim.create_optimizer(config), mask_fn, inpainter,
                     frozen_gan(previous["gan"]))
