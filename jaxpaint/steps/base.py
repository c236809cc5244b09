"""The contract between a model family and the one driver (:mod:`jaxpaint.train`).

A :class:`Task` bundles the pure functions of one model family. The driver owns everything
else: the mesh and shardings, jit, data, RNG, checkpoints, logging and evaluation. Task
functions must be pure and jit-able; the driver jits them with the batch sharded over the
``data`` mesh axis and the state replicated.

RNG: the driver passes ``rng = fold_in(seed_key, step)`` to ``train_step``; tasks split it
for masks, dropout, latents. Nothing random is stored in the state, so a resumed run draws
exactly what an uninterrupted run draws.
"""

import abc
from typing import Any

import jax

State = Any  # a pytree that orbax can save (flax TrainState, dicts of them, ...)
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
  """One model family's init, train step and inference, as pure functions."""

  #: Names of the images :meth:`inpaint` returns that are scored and drawn at eval time,
  #: in grid order. The first one is the model's headline result.
  eval_outputs: tuple[str, ...] = ("composite",)

  @abc.abstractmethod
  def init_state(self, rng: jax.Array, images: jax.Array) -> State:
    """Builds the train state from a sample batch.

    Args:
      rng: PRNG key.
      images: float [B, H, W, C] in [-1, 1]; only its shape and dtype matter.
    """

  @abc.abstractmethod
  def train_step(self, state: State, images: jax.Array, rng: jax.Array) -> tuple[State, Metrics]:
    """One optimisation step.

    Args:
      state: the train state.
      images: float [B, H, W, C] in [-1, 1], the clean targets; the task draws its own
        masks from ``rng`` (on device, inside the jit).
      rng: PRNG key for this step.

    Returns:
      The new state and scalar metrics; ``metrics['loss']`` is the headline loss that
      the driver watches for NaN/inf.
    """

  @abc.abstractmethod
  def inpaint(self, state: State, images: jax.Array, masks: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    """Inference on a masked batch (eval mode: running BN stats, no dropout).

    Args:
      images: float [B, H, W, C] in [-1, 1], the clean targets (holes are blanked inside).
      masks: float [B, H, W, 1], 1 = known pixel.
      rng: PRNG key for stochastic models (latent search, VAE sampling).

    Returns:
      Named float [B, H, W, C] images in [-1, 1], at least every name in ``eval_outputs``.
    """

  def parameters(self, state: State) -> Any:
    """The trainable parameters, for the parameter overview logged at start."""
    return state.params
