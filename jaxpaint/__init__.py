"""jaxpaint: image-inpainting training in JAX/Flax.

Conventions, used everywhere in the package:

* Images are float arrays in [-1, 1], NHWC: ``[B, H, W, C]``. Data pipelines deliver
  ``uint8`` images (4x less host->device traffic); steps convert them with
  :func:`jaxpaint.images.to_float`.
* Masks are float arrays ``[B, H, W, 1]`` with 1 = known pixel, 0 = hole. User mask PNGs
  follow other inpainting tools instead: white = hole (see :mod:`jaxpaint.masks`).
* A model's output ``G(x, m)`` is composited so that known pixels are kept:
  ``y = m * x + (1 - m) * G(x, m)``.
* Flax linen modules take ``train: bool``; BatchNorm state lives in the ``batch_stats``
  collection and dropout draws from the ``dropout`` RNG stream.

Models, layers, losses, masks, metrics and train steps import without TensorFlow, TFDS or
clu; only :mod:`jaxpaint.data` and the driver need them.
"""

__version__ = "0.1.0"
