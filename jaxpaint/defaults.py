"""The base config every file in ``configs/`` starts from: top-level keys as in flax examples,
plus one sub-dict per component, each defined next to the code that reads it."""

import ml_collections

from jaxpaint import masks, optim


def base_config() -> ml_collections.ConfigDict:
  try:
    from jaxpaint import data  # noqa: PLC0415 (keeps importing defaults light for model-only users)
    data_config = data.default_config()
  except ModuleNotFoundError:
    # No grain (a machine that only benchmarks or runs models): config.data keeps what the
    # config file sets; the driver imports jaxpaint.data itself and fails there.
    data_config = ml_collections.ConfigDict()
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 64          # global, over all devices and hosts
  config.image_size = 64          # square images, H = W
  config.num_train_steps = 1000
  config.learning_rate = 1e-3
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.compute_dtype = "float32"  # or "bfloat16": bf16 activations, float32 weights
  config.eval_hole_ratio_bins = False
  config.data = data_config
  config.mask = masks.default_config()
  config.eval_mask = None           # None: evaluate with config.mask
  config.optimizer = optim.default_config()
  config.model = ml_collections.ConfigDict()
  config.loss = ml_collections.ConfigDict()
  return config


def unet_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="unet", features=32, depth=2, convs_per_level=2, dropout_rate=0.2,
      use_batch_norm=False, output_activation="tanh"))


def pconv_model_config() -> ml_collections.ConfigDict:
  """PConv U-Net (Liu et al. 2018); 7 levels at 256^2, 8 at 512^2."""
  return ml_collections.ConfigDict(dict(
      name="pconv_unet", num_levels=7, base_features=64, partial=True, mask_update="fast",
      freeze_encoder_bn=False, output_activation="none"))


def pconv_loss_config() -> ml_collections.ConfigDict:
  """The paper's loss. perceptual/style need VGG16 weights (jaxpaint.losses.vgg); without a
  file they are switched off with a warning."""
  return ml_collections.ConfigDict(dict(
      valid=1.0, hole=6.0, tv=0.1, perceptual=0.05, style=120.0, mse=0.0, vgg16_weights=""))


def seed002_unet_config(dataset: str, image_size: int) -> ml_collections.ConfigDict:
  """Seed 002's protocol: 2-level U-Net (32/64/128, dropout 0.2, tanh), MSE, Adam 1e-3 (Keras'
  default), centre 8x8 hole, the first 1000 train images, batch 64, 100 epochs (~1600 steps)."""
  from jaxpaint.losses import reconstruction  # noqa: PLC0415
  config = base_config()
  config.batch_size = 64
  config.image_size = image_size
  config.num_train_steps = 1600
  config.learning_rate = 1e-3
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.data.name = dataset
  config.data.num_train_images = 1000
  config.data.num_eval_images = 10000
  config.mask.kind = "centre"
  config.mask.size = 8
  config.model = unet_model_config()
  config.loss = reconstruction.default_config()
  return config
