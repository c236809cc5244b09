"""VAE-GAN (Larsen et al. 2016) for inpainting, seed 004's model 2: CelebA 64x64 (28k train
images), a central 32x32 square hole; the encoder sees the masked image, the decoder (the GAN's
generator) draws the whole face, D judges whole images. Each network gets its own objective
(encoder: KL + learned-similarity feature loss; decoder: feature + GAN; both: L1 on the known
pixels); see jaxpaint/steps/vaegan.py. Adam 3e-4 beta1 0.5 for G and D (Larsen: RMSProp 3e-4).
Evaluated on the same 100 images and mask as configs/context_encoder_celeba64.py."""

from jaxpaint import defaults
from jaxpaint.steps import vaegan


def get_config():
  config = defaults.base_config()
  config.update(vaegan.default_config())  # model, loss, learning_rate, optimizer
  config.batch_size = 64
  config.image_size = 64
  config.num_train_steps = 20000
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.data.name = "celeb_a"
  config.data.num_train_images = 28000
  config.data.num_eval_images = 100
  config.mask.kind = "centre"
  config.mask.size = 32
  return config
