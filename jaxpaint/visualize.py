"""Image grids a person can look at: one row per example, one labelled column per image kind."""

import numpy as np
from PIL import Image, ImageDraw

from jaxpaint import images as image_lib

_LABEL_HEIGHT = 14


def make_grid(columns: dict[str, np.ndarray], max_rows: int = 8, pad: int = 2) -> np.ndarray:
  """columns: name -> float [B, H, W, C] in [-1, 1] (C = 1 or 3; masks as [B, H, W, 1] in
  {0, 1} go through ``mask_to_image`` first). Returns a uint8 RGB grid with a header row."""
  arrays = [image_lib.to_uint8(np.asarray(v)[:max_rows]) for v in columns.values()]
  arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
  rows, height, width, _ = arrays[0].shape
  cell_w = max(width, 6 * max(len(name) for name in columns) // 2) + pad
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
