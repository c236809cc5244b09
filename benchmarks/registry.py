"""The benchmarked programs: which config file, which stage, train step or inpaint, variants."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Spec:
  """One benchmarked program.

  Attributes:
    name: the ``--models`` name.
    config_file: file under ``configs/``.
    description: one line for the table's legend.
    stage: stage of a staged config (``config.stages``), or None.
    program: 'train' (the driver's train step) or 'inpaint' (``task.inpaint`` as the
      Evaluator runs it: images inpainted per call).
    sets: fixed dotted-key overrides that make a variant (applied before the command line's).
  """
  name: str
  config_file: str
  description: str
  stage: str | None = None
  program: str = "train"
  sets: tuple[tuple[str, Any], ...] = ()


SPECS = (
    Spec("unet", "unet_celeba.py", "U-Net (seed 004 model 1) train step"),
    Spec("pconv", "pconv.py", "PConv U-Net train step (grouped box-sum mask update)"),
    Spec("pconv_plain", "pconv.py", "the same U-Net with plain convolutions (issue 3 baseline)",
         sets=(("model.partial", False),)),
    Spec("pconv_naive", "pconv.py",
         "PConv U-Net with the usual full multi-channel mask convolution (issue 3 baseline)",
         sets=(("model.mask_update", "naive"),)),
    Spec("pix2pix", "pix2pix.py", "Pix2Pix G + D train step"),
    Spec("lsgan", "lsgan.py", "LSGAN G + D train step (stage gan)", stage="gan"),
    Spec("lsgan_inpaint", "lsgan.py",
         "LSGAN latent-optimisation inpainting (task.inpaint of stage gan; images/s)",
         stage="gan", program="inpaint"),
    Spec("refiner", "lsgan.py", "AE refinement train step (stage refiner)", stage="refiner"),
    Spec("context_encoder", "context_encoder.py", "Context Encoders G + D train step"),
    Spec("vaegan", "vaegan.py", "VAE-GAN train step"),
)
BY_NAME = {spec.name: spec for spec in SPECS}
