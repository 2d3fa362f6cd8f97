"""Training: one loop for teacher fine-tuning and every distillation method.

Read in this order:

- loop.py        `train` and `training_step`: the loop and one step, in order, with costs
- objective.py   `Objective`: what a method is (loss terms, its own parameters, statistics)
- run.py         `TrainingRun`: the parts of a run and the wrappers (DDP, compile, bf16)
- optim.py       AdamW groups, schedules, clipping
- order.py       which rows each batch holds (shuffled, or grouped by length)
- schedule.py    settings checked and --epoch / --warmup_rate resolved before training
- state.py       what --resume restores, and how it is saved
- checkpoints.py evaluation during training and --keep_checkpoints
- log.py         tensorboard, train_log.csv, the terminal
- guard.py       the NaN guard
- precision.py   bf16 weight copies for --amp bf16

Methods and entry points import what they need from here.
"""
from fine_tune.training.loop import accumulate_gradients, train, training_step
from fine_tune.training.objective import FineTuning, Objective
from fine_tune.training.optim import OptimizerSettings, TrainableGroup, make_groups
from fine_tune.training.order import BatchOrder
from fine_tune.training.run import TrainingRun
from fine_tune.training.schedule import (check_padding, check_training_args, resolve_schedule,
                                         training_data)

__all__ = ["BatchOrder", "FineTuning", "Objective", "OptimizerSettings", "TrainableGroup",
           "TrainingRun", "accumulate_gradients", "check_padding", "check_training_args",
           "make_groups", "resolve_schedule", "train", "training_data", "training_step"]
