"""Image grids a person can look at: one row per example, one labelled column per image kind."""

import numpy as np
from PIL import Image, ImageDraw

from jaxpaint import images as image_lib

_LABEL_HEIGHT = 14


def make_grid(columns: dict[str, np.ndarray], max_rows: int = 8, pad: int = 4,
              min_size: int = 96) -> np.ndarray:
  """columns: name -> float [B, H, W, C] in [-1, 1] (C = 1 or 3; masks [B, H, W, 1] in {0, 1}
  go through :func:`mask_to_image` first). Returns a uint8 RGB grid with a header row; images
  smaller than ``min_size`` are enlarged by an integer factor (nearest) so a person can see them."""
  arrays = [image_lib.to_uint8(np.asarray(v)[:max_rows]) for v in columns.values()]
  arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
  zoom = max(1, -(-min_size // max(arrays[0].shape[1:3])))
  arrays = [a.repeat(zoom, axis=1).repeat(zoom, axis=2) for a in arrays]
  rows, height, width, _ = arrays[0].shape
  draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  cell_w = max(width, max(int(draw.textlength(name)) for name in columns)) + pad
  grid = np.full((_LABEL_HEIGHT + rows * (height + pad), len(arrays) * cell_w, 3), 255, np.uint8)
  for c, array in enumerate(arrays):
    for r in range(rows):
      top, left = _LABEL_HEIGHT + r * (height + pad), c * cell_w
      grid[top:top + height, left:left + width] = array[r]
  image = Image.fromarray(grid)
  draw = ImageDraw.Draw(image)
  for c, name in enumerate(columns):
    draw.text((c * cell_w + 1, 1), name, fill=(0, 0, 0))
  return np.asarray(image)


def mask_to_image(masks: np.ndarray) -> np.ndarray:
  """[B, H, W, 1] with 1 = known -> [-1, 1] image with holes white (the PNG convention)."""
  return 1.0 - 2.0 * np.asarray(masks, np.float32)


def save_png(path: str, image: np.ndarray) -> None:
  Image.fromarray(image).save(path)
