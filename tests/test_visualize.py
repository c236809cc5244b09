"""Image grids: layout, enlargement of small images, mask colouring, labels."""

import numpy as np

from jaxpaint import visualize


def test_grid_layout_zoom_and_pixels():
  rng = np.random.default_rng(0)
  image = rng.uniform(-1, 1, (3, 16, 16, 3))
  masks = np.ones((3, 16, 16, 1))
  masks[:, 4:8, 4:8] = 0
  grid = visualize.make_grid({"input": image, "mask": visualize.mask_to_image(masks)}, pad=4, min_size=96)
  zoom = 6  # 16 px -> 96 px
  header = visualize._LABEL_HEIGHT
  assert grid.dtype == np.uint8 and grid.shape[0] == header + 3 * (16 * zoom + 4)
  # The first cell is the first image, enlarged by nearest-neighbour repetition.
  first = grid[header:header + 16 * zoom, :16 * zoom]
  expected = np.repeat(np.repeat((np.round((image[0] + 1) * 127.5)).astype(np.uint8), zoom, 0), zoom, 1)
  np.testing.assert_array_equal(first, expected)
  # Holes are drawn white, known pixels black.
  cell_w = grid.shape[1] // 2
  mask_cell = grid[header:header + 16 * zoom, cell_w:cell_w + 16 * zoom]
  assert (mask_cell[5 * zoom, 5 * zoom] == 255).all() and (mask_cell[0, 0] == 0).all()
  # Labels are drawn in the header.
  assert grid[:header].min() < 128


def test_rows_are_capped():
  images = np.zeros((20, 96, 96, 3))
  grid = visualize.make_grid({"a": images}, max_rows=8, pad=4)
  assert grid.shape[0] == visualize._LABEL_HEIGHT + 8 * 100
