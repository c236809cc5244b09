"""The paper's setting: PConv U-Net at 512x512 (8 levels), batch 6 per V100 in the paper, Adam
2e-4, the full loss (set config.loss.vgg16_weights for the perceptual and style terms).
Data: a folder of your photos (Places2 / ImageNet in the paper)."""

from jaxpaint import defaults


def get_config():
  config = defaults.base_config()
  config.batch_size = 6
  config.image_size = 512
  config.num_train_steps = 200000
  config.learning_rate = 2e-4
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000
  config.eval_hole_ratio_bins = True
  config.data.name = "folder"
  config.data.num_eval_images = 600
  config.mask.kind = "free_form"
  config.mask.min_hole_ratio = 0.01
  config.mask.max_hole_ratio = 0.6
  config.model = defaults.pconv_model_config()
  config.model.num_levels = 8
  config.loss = defaults.pconv_loss_config()
  return config
