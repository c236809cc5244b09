"""PConv U-Net with the paper's loss on CelebA 256x256 and free-form masks with hole ratios in
(0.01, 0.6], evaluated per hole-ratio bin as in Liu et al. 2018. Fine-tune phase:
`--config.learning_rate=5e-5 --config.model.freeze_encoder_bn=True`."""

from jaxpaint import defaults


def get_config():
  config = defaults.base_config()
  config.batch_size = 24
  config.image_size = 256
  config.num_train_steps = 100000
  config.learning_rate = 2e-4
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.eval_hole_ratio_bins = True
  config.data.name = "celeb_a"
  config.data.num_eval_images = 2000
  config.mask.kind = "free_form"
  config.mask.min_hole_ratio = 0.01
  config.mask.max_hole_ratio = 0.6
  config.model = defaults.pconv_model_config()
  config.loss = defaults.pconv_loss_config()
  return config
