"""Context Encoders on CelebA 64x64 with the centre 32x32 hole ([16:48]^2, Yeh et al.'s mask and
configs/lsgan.py's evaluation mask), as in seed 003's comparison (20k train / 100 test images).

The 64x64 network is Pathak's one level shallower at each end (patch 32, 4000-d bottleneck).
The overlap ring is 0 here: the hole must be exactly the 32x32 square the other models are
scored on, and the predicted patch must be a power of two, so there is no room for a ring
(Pathak's 4-px ring would need a 40x40 patch); the L2 is then a plain MSE on the patch.
Also the evaluation config of the comparison command:

  python -m jaxpaint.evaluate --config=configs/context_encoder_celeba64.py \
      --workdirs=/tmp/ce64,/tmp/lsgan --output=/tmp/compare
"""

from jaxpaint import defaults
from jaxpaint.steps import context_encoder


def get_config():
  config = defaults.base_config()
  config.update(context_encoder.default_config())  # model, loss, learning_rate, optimizer
  config.batch_size = 64
  config.image_size = 64
  config.num_train_steps = 15000  # ~48 epochs of 20k images
  config.eval_every_steps = 1500
  config.checkpoint_every_steps = 1500
  config.data.name = "celeb_a"
  config.data.num_train_images = 20000
  config.data.num_eval_images = 100
  config.model.update(patch_size=32, overlap=0, bottleneck=4000)
  config.mask.kind = "centre"
  config.mask.size = 32
  return config
