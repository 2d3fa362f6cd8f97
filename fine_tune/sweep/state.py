"""What a run's experiment folder says about the run: `state` tells whether it is done
(skip it), was killed (continue it with --resume), is new, is trained now by another
process (`locked`: its flock is held) or was trained with other settings than the plan's
(`_differences`, against its config.json). A training run is done when its last
checkpoint is saved and scored on every --eval_during_training split, an evaluation when
every checkpoint it asks for is scored on its --dataset, a prediction when its
submission file exists.

`run` is a plan.py `Run` (its folder(), kind, settings and task()); this module imports
nothing of the sweep, and plan.py imports it (`_config`, for a task-less evaluation's
task). fine_tune.experiment, fine_tune.results and pandas are imported when a folder is
read, not before.
"""
import fcntl
import json
import os
from pathlib import Path

from fine_tune.errors import UserError


# Flags whose change does not make a finished experiment another run: those --resume
# accepts changed, and --ptrain_ver (recorded made absolute). Values the scripts derive
# (a student's max_seq_len, steps from --epoch) are None in the plan, so not compared.
def ignored_when_comparing() -> set:
    from fine_tune.experiment import RESUMABLE_CHANGES
    return RESUMABLE_CHANGES | {"world_size", "ptrain_ver"}


def locked(folder: Path) -> bool:
    """Whether a process is training into `folder` now (its flock is held)."""
    try:
        fd = os.open(folder / ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # (closing releases a lock this call took)


def state(run) -> tuple[str, str]:
    """(state, why): 'done' (skip it), 'resume' (killed: continue it), 'new', 'elsewhere'
    (another process trains it now) or 'conflict' (why says what differs)."""
    folder = run.folder()
    config = _config(folder)
    if run.kind == "train":
        if locked(folder):
            return "elsewhere", f"{folder} is being trained by another process"
        if config is None:
            return "new", ""
        differences = _differences(run.settings, config)
        if differences:
            if run.settings.get("overwrite"):
                return "new", f"{folder} was trained with other settings; --overwrite replaces it"
            return "conflict", (f"{folder} exists with other settings ({'; '.join(differences)}): "
                                "give the run another experiment name, or add overwrite = true "
                                "to replace it")
        total = config.get("total_step")
        steps = _steps(folder)
        splits = config.get("eval_during_training") or []
        if total in steps and all(_scored(folder, split, total, config.get("amp", "fp32"))
                                  for split in splits):
            return "done", f"{folder} has its last checkpoint (step {total})"
        if not steps:
            return "resume", f"{folder} stopped before its first checkpoint (of {total} steps)"
        if total in steps:
            return "resume", f"{folder} stopped while scoring its last checkpoint (step {total})"
        return "resume", f"{folder} stopped; its last checkpoint is step {steps[-1]} of {total}"
    if config is None:
        return "new", ""
    steps = _steps(folder)
    amp = run.settings.get("amp", "fp32")
    if run.kind == "eval":
        wanted = {None: steps, "best": [best.step] if (best := _best(run, folder)) else []}.get(
            run.settings.get("ckpt"), [run.settings.get("ckpt")])
        if wanted and all(_scored(folder, run.settings["dataset"], step, amp) for step in wanted):
            return "done", f"{folder} has scores of every checkpoint on {run.settings['dataset']}"
        return "new", ""
    step = run.settings.get("ckpt")
    task = run.task()
    if step == "best":
        best = _best(run, folder)
        step = best.step if best is not None else None
    name = task.submissions.get(run.settings["dataset"])
    if step is not None and name and (folder / "predictions" / str(step) / name).is_file():
        return "done", f"{folder}/predictions/{step}/{name} exists"
    return "new", ""


def _best(run, folder: Path):
    from fine_tune.results import best_checkpoint
    try:
        return best_checkpoint(folder, run.task())
    except UserError:  # (a damaged store: the run itself says so)
        return None


def _config(folder: Path) -> dict | None:
    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _steps(folder: Path) -> list[int]:
    from fine_tune.experiment import CHECKPOINT
    return sorted(int(m.group(1)) for p in folder.glob("model-*.pt") if (m := CHECKPOINT.match(p.name)))


def _scored(folder: Path, split: str, step: int, amp: str) -> bool:
    path = folder / f"results_{split}.csv"
    try:
        import pandas as pd
        table = pd.read_csv(path)
    except (OSError, ValueError):
        return False
    rows = table.loc[table["step"] == step] if "step" in table.columns else table.iloc[:0]
    return bool(len(rows)) and ("amp" not in rows.columns or amp in set(rows["amp"].astype(str)))


def _differences(planned: dict, config: dict) -> list[str]:
    """Flags the plan sets otherwise than the experiment's config.json (None: derived by
    the script, not compared)."""
    from fine_tune.experiment import _jsonable
    differences, ignored = [], ignored_when_comparing()
    for key, value in sorted(planned.items()):
        if key in ignored or value is None or key not in config:
            continue
        if _jsonable(value) != config[key]:
            differences.append(f"--{key} {config[key]!r} there, {value!r} planned")
    return differences
