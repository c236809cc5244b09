"""Optimisers and learning-rate schedules from config, shared by every task."""

import ml_collections
import optax

SCHEDULES = ("constant", "cosine", "linear_decay")


def default_config() -> ml_collections.ConfigDict:
  """The ``config.optimizer`` sub-dict; ``config.learning_rate`` is the peak rate."""
  return ml_collections.ConfigDict(dict(
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      grad_clip_norm=0.0,  # 0 = no clipping
      schedule="constant",  # constant | cosine | linear_decay
      warmup_steps=0,
      # linear_decay: constant until this step, then linear to 0 at num_train_steps (pix2pix).
      decay_start_step=0,
  ))


def validate_config(config: ml_collections.ConfigDict) -> None:
  opt = config.optimizer
  if opt.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r}; choose one of {SCHEDULES}.")
  if config.learning_rate <= 0:
    raise ValueError(f"config.learning_rate={config.learning_rate} must be > 0.")
  if not 0 <= opt.warmup_steps <= config.num_train_steps:
    raise ValueError(f"config.optimizer.warmup_steps={opt.warmup_steps} must lie in [0, num_train_steps].")
  if opt.schedule == "linear_decay" and not 0 <= opt.decay_start_step < config.num_train_steps:
    raise ValueError(
        f"config.optimizer.decay_start_step={opt.decay_start_step} must lie in [0, num_train_steps).")


def create_schedule(config: ml_collections.ConfigDict, learning_rate: float | None = None) -> optax.Schedule:
  """Warm-up followed by the configured decay; ``learning_rate`` overrides the peak."""
  opt = config.optimizer
  peak = config.learning_rate if learning_rate is None else learning_rate
  total, warmup = config.num_train_steps, opt.warmup_steps
  if opt.schedule == "constant":
    main = optax.constant_schedule(peak)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, decay_steps=max(total - warmup, 1))
  else:
    hold = max(opt.decay_start_step - warmup, 0)
    main = optax.join_schedules(
        [optax.constant_schedule(peak),
         optax.linear_schedule(peak, 0.0, transition_steps=max(total - warmup - hold, 1))],
        boundaries=[hold])
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], boundaries=[warmup])


def create_optimizer(config: ml_collections.ConfigDict, learning_rate: float | None = None) -> optax.GradientTransformation:
  """Adam(W) with the configured schedule and optional global-norm clipping."""
  opt = config.optimizer
  schedule = create_schedule(config, learning_rate)
  adam = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay) if opt.weight_decay \
      else optax.adam(schedule, b1=opt.b1, b2=opt.b2)
  if opt.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), adam)
  return adam
