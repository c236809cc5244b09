"""Input pipelines: uint8 image batches from TFDS, a folder of images or skimage samples.

Imports grain (and, when a TFDS dataset is used, tensorflow_datasets); the model, loss
and step modules never import this package.

Driver usage::

  data.validate_config(config)
  train_iter = data.create_train_iterator(config, jax.process_index(), jax.process_count())
  batch = next(train_iter)  # {'image': uint8 [batch_size // process_count, S, S, C]}
  eval_batches = data.create_eval_batches(config)  # list of {'image': uint8 [B, S, S, C]}
"""

from jaxpaint.data.pipeline import create_eval_batches
from jaxpaint.data.pipeline import create_source
from jaxpaint.data.pipeline import create_train_iterator
from jaxpaint.data.pipeline import default_config
from jaxpaint.data.pipeline import NAMES
from jaxpaint.data.pipeline import num_channels
from jaxpaint.data.pipeline import validate_config
from jaxpaint.data.sources import DatasetNotPreparedError

__all__ = [
    'NAMES', 'DatasetNotPreparedError', 'create_eval_batches', 'create_source',
    'create_train_iterator', 'default_config', 'num_channels', 'validate_config',
]
