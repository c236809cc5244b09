"""U-Net on the built-in `samples` photos (scikit-image), 64x64, two random boxes per image.

Runs offline in a few minutes on 2 CPU cores; the eval JSON shows the hole PSNR climbing above
that of the blank (masked) input.
"""

from jaxpaint import defaults
from jaxpaint.losses import reconstruction


def get_config():
  config = defaults.base_config()
  config.batch_size = 16
  config.image_size = 64
  config.num_train_steps = 400
  config.learning_rate = 2e-3
  config.log_every_steps = 20
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 20
  config.data.name = "samples"
  config.data.num_eval_images = 64
  config.mask.kind = "boxes"
  config.mask.num_boxes = 2
  config.mask.box_size = 12
  config.mask.box_max_size = 24
  config.model = defaults.unet_model_config()
  config.model.update(features=16, depth=3, dropout_rate=0.0)
  config.loss = reconstruction.default_config()
  config.loss.update(mse=1.0, hole_mse=1.0)
  return config
