"""Context Encoders (Pathak et al. 2016) as in the paper and train.lua: 128x128, a 64x64 centre
patch predicted from its context (the hole is that patch less a 4-px overlap ring: 56x56, filled
with the ImageNet mean colour), a 4000-d bottleneck, D on the patch only, 0.999 * overlap-weighted
L2 + 0.001 * adversarial, Adam 2e-4 (G at 10x) beta1 0.5, batch 64. Data: CelebA (centre crop,
resized); for your own photos `--config.data.name=folder --config.data.path=DIR`."""

from jaxpaint import defaults
from jaxpaint.steps import context_encoder


def get_config():
  config = defaults.base_config()
  config.update(context_encoder.default_config())  # model, loss, learning_rate, optimizer
  config.batch_size = 64
  config.image_size = 128
  config.num_train_steps = 50000  # ~20 epochs of CelebA's 162,770 train images
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.data.name = "celeb_a"
  config.data.num_eval_images = 512
  config.model.update(patch_size=64, overlap=4, bottleneck=4000)
  config.mask.kind = "centre"  # must be the task's hole: patch_size - 2 * overlap
  config.mask.size = context_encoder.hole_size(config.model.patch_size, config.model.overlap)
  return config
