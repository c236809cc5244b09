"""Supervised inpainting: a network maps (masked image, mask) to an image (U-Net, PConv U-Net)."""

from typing import Any, Callable

import flax.linen as nn
from absl import logging
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxpaint import images as image_lib
from jaxpaint.steps import base

LossFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
MaskFn = Callable[[jax.Array, int], jax.Array]


class TrainState(train_state.TrainState):
  """flax TrainState plus BatchNorm statistics (an empty dict for models without BN)."""
  batch_stats: Any = None


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       *model_args) -> TrainState:
  """Initialises ``model`` on ``model_args`` (eval mode, so no dropout RNG is needed)."""
  variables = model.init(rng, *model_args, train=False)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def model_variables(state: TrainState, params=None) -> dict[str, Any]:
  variables = {"params": state.params if params is None else params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables


class ReconstructionTask(base.Task):
  """Trains ``model(images, masks, train) -> [B, H, W, C]`` with a pixel loss on its raw output."""

  eval_outputs = ("composite",)

  def __init__(self, model: nn.Module, tx: optax.GradientTransformation, mask_fn: MaskFn, loss_fn: LossFn):
    self.model, self.tx, self.mask_fn, self.loss_fn = model, tx, mask_fn, loss_fn

  def init_state(self, rng: jax.Array, images: jax.Array) -> TrainState:
    masks = jnp.ones(images.shape[:-1] + (1,), images.dtype)
    return create_train_state(self.model, self.tx, rng, images, masks)

  def train_step(self, state: TrainState, images: jax.Array, rng: jax.Array) -> tuple[TrainState, base.Metrics]:
    mask_rng, dropout_rng = jax.random.split(rng)
    masks = self.mask_fn(mask_rng, images.shape[0])

    def loss_fn(params):
      outputs, updates = self.model.apply(
          model_variables(state, params), images, masks, train=True,
          rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
      loss, terms = self.loss_fn(outputs, images, masks)
      return loss, (terms, updates)

    (loss, (terms, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if state.batch_stats:
      state = state.replace(batch_stats=updates["batch_stats"])
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **terms}
    return state, metrics

  def inpaint(self, state: TrainState, images: jax.Array, masks: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    del rng  # deterministic in eval mode
    outputs = self.model.apply(model_variables(state), images, masks, train=False)
    return {"output": outputs, "composite": image_lib.composite(images, outputs, masks)}


def build_task(config, mask_fn: MaskFn, channels: int, previous: dict) -> ReconstructionTask:
  """U-Net (``config.model.name == 'unet'``) or PConv U-Net (``'pconv_unet'``)."""
  del previous
  from jaxpaint import optim, steps  # noqa: PLC0415 (steps imports this module lazily)
  from jaxpaint.losses import reconstruction
  from jaxpaint.models.unet import UNet
  m = config.model
  if m.name == "unet":
    model = UNet(out_channels=channels, features=m.features, depth=m.depth,
                 convs_per_level=m.convs_per_level, dropout_rate=m.dropout_rate,
                 use_batch_norm=m.use_batch_norm, output_activation=m.output_activation,
                 dtype=steps.compute_dtype(config))
    loss_fn = lambda out, target, masks: reconstruction.reconstruction_loss(out, target, masks, config.loss)
  elif m.name == "pconv_unet":
    from jaxpaint.losses import pconv
    from jaxpaint.models.pconv_unet import PConvUNet
    model = PConvUNet(out_channels=channels, num_levels=m.num_levels, base_features=m.base_features,
                      partial=m.partial, mask_update=m.mask_update, freeze_encoder_bn=m.freeze_encoder_bn,
                      output_activation=m.output_activation, dtype=steps.compute_dtype(config))
    weights = config.loss.to_dict()
    vgg_path = weights.pop("vgg16_weights", "") or None
    if vgg_path is None and (weights.get("perceptual") or weights.get("style")):
      logging.warning("No VGG16 weights (config.loss.vgg16_weights): training without the perceptual "
                      "and style terms. See jaxpaint.losses.vgg.load_vgg16_params to make the file.")
      weights.update(perceptual=0.0, style=0.0)
    loss_fn = pconv.make_pconv_loss(weights, vgg_path=vgg_path)
  else:
    raise ValueError(f"ReconstructionTask cannot build config.model.name={m.name!r}.")
  return ReconstructionTask(model, optim.create_optimizer(config), mask_fn, loss_fn)
