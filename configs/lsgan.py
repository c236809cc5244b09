"""Seed 003, the main job: LSGAN semantic inpainting + AutoEncoder refiner on CelebA 64x64.

  python -m jaxpaint.train --config=configs/lsgan.py --workdir=/tmp/jaxpaint/lsgan

Two stages, trained in order, each in its own sub-directory of the workdir
(:mod:`jaxpaint.steps.lsgan`):

* ``gan``: a DCGAN (z = 100 -> 64x64x3; D: 4 stride-2 convs -> 8192 -> 1) trained as an LSGAN.
  Its evaluations inpaint by latent search (Yeh et al. 2017): the ``lsgan`` row.
* ``refiner``: seed 003's AutoEncoder (4 levels, 8192 bottleneck) trained with MSE on the
  frozen GAN's completions; the ``refined`` row, ``M * y + (1 - M) * AE(completion)``.

Seed 003 reports SSIM / PSNR on 100 CelebA test faces with a missing region: LSGAN
0.817 / 19.30, LSGAN + AutoEncoder 0.883 / 22.30 (Context Encoders 0.872 / 22.85). It trained
on 20k faces at batch 32; here the whole CelebA train split is used (GANs improve with data;
``--config.data.num_train_images=20000`` reproduces the seed's subset).

Offline, ``--config.data.name=samples`` runs the same pipeline on the built-in photos; on a
CPU also shrink it (32x32, smaller G and D, fewer steps and search iterations): the command
is in the README, section "LSGAN semantic inpainting (the main job)".
"""

from jaxpaint import defaults
from jaxpaint.steps import lsgan


def get_config():
  config = defaults.base_config()
  config.batch_size = 64                # DCGAN's batch (seed 003: 32)
  config.image_size = 64                # seed 003: CelebA 64x64
  config.data.name = "celeb_a"          # aligned faces, centre 178x178 crop, resized
  config.data.num_eval_images = 100     # seed 003: 100 test images
  config.mask.kind = "centre"           # Yeh et al.'s centre block, rows/cols [16:48)
  config.mask.size = 32

  lsgan_config = lsgan.default_config()
  config.model = lsgan_config.model     # G, D and the refiner (shared by both stages)
  config.loss = lsgan_config.loss       # LSGAN a, b, c = 0, 1, 1 (Mao et al.'s 0-1 coding)
  config.optimizer = lsgan_config.optimizer  # Adam beta1 0.5 (DCGAN), constant rate
  config.latent_search = lsgan_config.latent_search  # Yeh et al.: Adam 0.01, 1000 iters, lam 0.1

  config.stages = ("gan", "refiner")
  config.run_stages = ()                # () = all; e.g. --config.run_stages=gan
  # The top-level values below are the gan stage's; stage_overrides says what differs.
  config.num_train_steps = 25_000
  config.learning_rate = 2e-4
  config.log_every_steps = 100
  config.eval_every_steps = 5_000       # each evaluation runs the full latent search
  config.checkpoint_every_steps = 2_500
  config.stage_overrides = dict(
      # ~10 epochs of CelebA's 162k train faces at batch 64 (DCGAN trains 5-25 epochs).
      gan=dict(num_train_steps=25_000, learning_rate=2e-4, optimizer=dict(b1=0.5),
               eval_every_steps=5_000, checkpoint_every_steps=2_500),
      # 5k steps x 64 fresh completions (seed 003: "2000 epochs" of its AE on 20k images,
      # unclear units). Adam at Keras's default 1e-3, beta1 0.9 for a plain autoencoder.
      # Each step runs a 1 x 100-iteration latent search per image (latent_search.train_*),
      # roughly 50x a GAN step's compute, hence checkpoints every 500 steps.
      refiner=dict(num_train_steps=5_000, learning_rate=1e-3, optimizer=dict(b1=0.9),
                   eval_every_steps=1_000, checkpoint_every_steps=500),
  )
  return config
