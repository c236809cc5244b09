"""VGG16 conv1_1..conv3_3 feature extractor (torchvision layout) for perceptual/style losses.

Weights are not bundled. Convert torchvision's ImageNet VGG16 once, on any machine with
PyTorch (torchvision itself is not needed)::

  import numpy as np, torch
  # https://download.pytorch.org/models/vgg16-397923af.pth, or
  # torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()
  state = torch.load("vgg16-397923af.pth", map_location="cpu")
  np.savez("vgg16.npz", **{k: v.numpy() for k, v in state.items() if k.startswith("features.")})

The file keeps torchvision's key names and layout: ``features.{i}.weight`` [out, in, 3, 3] and
``features.{i}.bias`` [out] for i in 0, 2, 5, 7, 10, 12, 14 (see :data:`TORCH_SHAPES`); other
keys are ignored. A ``.pkl``/``.pickle`` file holding the same dict of arrays also loads.
"""

import os
import pickle
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# (flax name, torchvision features index, output channels); "pool" = 2x2 max-pool, stride 2.
LAYERS = (("conv1_1", 0, 64), ("conv1_2", 2, 64), "pool",
          ("conv2_1", 5, 128), ("conv2_2", 7, 128), "pool",
          ("conv3_1", 10, 256), ("conv3_2", 12, 256), ("conv3_3", 14, 256), "pool")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torch_shapes() -> dict[str, tuple[int, ...]]:
  shapes, in_channels = {}, 3
  for layer in LAYERS:
    if layer == "pool":
      continue
    _, index, out_channels = layer
    shapes[f"features.{index}.weight"] = (out_channels, in_channels, 3, 3)
    shapes[f"features.{index}.bias"] = (out_channels,)
    in_channels = out_channels
  return shapes


#: Required keys of a weights file and their torchvision shapes.
TORCH_SHAPES = _torch_shapes()

_HOWTO = ("Produce it from torchvision's VGG16 with: state = torch.load('vgg16-397923af.pth'); "
          "np.savez('vgg16.npz', **{k: v.numpy() for k, v in state.items() "
          "if k.startswith('features.')}) (see jaxpaint.losses.vgg).")


class VGG16Features(nn.Module):
  """images [B, H, W, 3] (or 1 channel, repeated) in [-1, 1] -> (pool1, pool2, pool3).

  Inputs are mapped to [0, 1] and ImageNet-normalised as torchvision expects. Outputs are
  [B, H/2, W/2, 64], [B, H/4, W/4, 128], [B, H/8, W/8, 256] (post-ReLU max-pools).
  """
  dtype: Any = None

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"VGG16 features need [B, H, W, 3] or [B, H, W, 1] images; got {images.shape}.")
    if images.shape[-1] == 1:
      images = jnp.repeat(images, 3, axis=-1)
    x = ((images + 1.0) / 2.0 - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
    pools = []
    for layer in LAYERS:
      if layer == "pool":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        pools.append(x)
      else:
        name, _, features = layer
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=name)(x))
    return tuple(pools)


def _read(path: str) -> dict[str, Any]:
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in (".npz", ".pkl", ".pickle"):
    raise ValueError(f"VGG16 weights file {path} has suffix {suffix!r}; use .npz (or .pkl). {_HOWTO}")
  try:
    if suffix == ".npz":
      data = np.load(path, allow_pickle=False)
      if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"it holds a single {type(data).__name__}, not named arrays")
      with data:
        return {k: data[k] for k in data.files}
    with open(path, "rb") as f:
      data = pickle.load(f)
  except Exception as e:  # zip, pickle and numpy all raise their own error types
    raise ValueError(f"could not read VGG16 weights from {path}: {e}. {_HOWTO}") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path} holds a {type(data).__name__}, not a dict of arrays. {_HOWTO}")
  return data


def load_vgg16_params(path: str) -> dict[str, Any]:
  """Reads torchvision-layout VGG16 weights; returns ``{'params': ...}`` for :class:`VGG16Features`.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: unreadable file, wrong suffix, missing keys or wrong shapes.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"VGG16 weights file {path} not found. {_HOWTO}")
  data = _read(path)
  problems = []
  for key, shape in TORCH_SHAPES.items():
    if key not in data:
      problems.append(f"missing {key}")
    elif tuple(np.shape(data[key])) != shape:
      problems.append(f"{key} has shape {tuple(np.shape(data[key]))}, expected {shape}")
  if problems:
    raise ValueError(f"{path} is not a torchvision VGG16 features file: {'; '.join(problems)}. {_HOWTO}")
  params = {}
  for layer in LAYERS:
    if layer == "pool":
      continue
    name, index, _ = layer
    weight = np.asarray(data[f"features.{index}.weight"], np.float32)
    params[name] = {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
                    "bias": jnp.asarray(np.asarray(data[f"features.{index}.bias"], np.float32))}
  return {"params": params}
