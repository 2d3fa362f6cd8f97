"""What --resume restores, and writing it: the checkpoint's weights (model-<step>.pt and
gate-<step>.pt), the optimisers and schedules, the batch order and every random state
(per rank under torchrun, per role's device for CUDA), in train_state.pt."""
import random

import numpy as np
import torch

from fine_tune import distributed
from fine_tune.training.order import BatchOrder
from fine_tune.training.run import TrainingRun


def restore(run: TrainingRun, groups: list, order: BatchOrder) -> int:
    """Continue from the experiment's last training state; returns its step."""
    experiment = run.experiment
    state = experiment.load_train_state()
    if state is None:
        print(f"{experiment.path} has no training state yet: starting from step 0")
        return 0
    step = state["step"]
    run.model.load_state_dict(experiment.load_checkpoint(step))
    if len(groups) > 1:
        run.objective.load_state_dict(experiment.load_checkpoint(step, kind="gate"))
    for group in groups:
        group.load_state_dict({"optimizer": state["optimizers"][group.name],
                               "scheduler": state["schedulers"][group.name]})
    order.load_state_dict(state["order"])
    set_rng_state(run, state.get("rng_by_rank", [state["rng"]])[distributed.rank()])
    print(f"resuming {experiment.name} from step {step}")
    return step


def save_weights(run: TrainingRun, groups: list, step: int) -> None:
    """model-<step>.pt (and gate-<step>.pt), each written atomically (under torchrun by
    rank 0 alone: `train` calls it through distributed.agreed)."""
    run.experiment.save_checkpoint(run.model.state_dict(), step)
    if len(groups) > 1:
        run.experiment.save_checkpoint(run.objective.state_dict(), step, kind="gate")


def save_train_state(run: TrainingRun, groups: list, order: BatchOrder, step: int) -> None:
    """The state a resume needs, written after the step's weights: a kill before it leaves
    the previous training state, which points at checkpoints that are all complete.
    Under torchrun it holds every rank's random states (rank 0 writes it)."""
    rngs = distributed.gather_objects(rng_state(run))
    distributed.agreed(lambda: _write_train_state(run, groups, order, step, rngs), main_only=True)


def _write_train_state(run: TrainingRun, groups: list, order: BatchOrder, step: int, rngs: list) -> None:
    experiment = run.experiment
    states = [group.state_dict() for group in groups]
    experiment.save_train_state({
        "step": step,
        "optimizers": {g.name: s["optimizer"] for g, s in zip(groups, states)},
        "schedulers": {g.name: s["scheduler"] for g, s in zip(groups, states)},
        "order": order.state_dict(),
        "rng": rngs[0],
        **({"rng_by_rank": rngs} if len(rngs) > 1 else {}),
    })


def rng_state(run: TrainingRun) -> dict:
    """Random states: the CPU's, Python's, NumPy's, and the CUDA generator of each role's
    device (student, teacher, gates), keyed by role, not by CUDA index, so a resume on
    other device ids (or fewer GPUs) restores each where that role now runs."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state(), "cuda_by_role": {}}
    for role, device in run.roles().items():
        if device.type == "cuda":
            state["cuda_by_role"][role] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(run: TrainingRun, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    saved = state.get("cuda_by_role", {})
    if "cuda" in state:  # written before states were kept by role: one per CUDA index
        saved = {role: state["cuda"][device.index] for role, device in run.roles().items()
                 if device.type == "cuda" and device.index < len(state["cuda"])}
    moved = []
    for role, device in run.roles().items():
        if device.type == "cuda" and role in saved:
            torch.cuda.set_rng_state(saved[role], device)
        elif (device.type == "cuda") != (role in saved):
            moved.append(role)
    if moved:
        print(f"note: the {', '.join(moved)} now run{'s' if len(moved) == 1 else ''} on another "
              "kind of device than before (CPU/GPU); training continues correctly, but its "
              "random numbers (dropout) differ from those of an uninterrupted run")
