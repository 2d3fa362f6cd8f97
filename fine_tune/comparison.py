"""Two experiments, or two seed groups, loaded and compared: `compare_experiments` finds
each experiment's folder under --exp_dir, picks its checkpoint (its best, in the
precision that made it best, or a given step), loads the per-row predictions that
evaluation keeps (eval_predictions/<split>/, through fine_tune.results), checks that every
side was scored on the same rows (their fingerprints), and compares them with
fine_tune.stats.paired_bootstrap. `seed_group` names the experiments of one's seed group
as the report forms it (fine_tune.experiment_rows). `python -m fine_tune.compare` and
`python -m fine_tune.report --baseline` both call these.
"""
import json
import time
from pathlib import Path

from fine_tune.errors import UserError
from fine_tune.experiment_rows import experiment_row
from fine_tune.glue import get_task
from fine_tune.results import dev_split, exp_dir_flag, load_predictions, require_best
from fine_tune.stats import Difference, p_value_test, paired_bootstrap


def _folder(exp_dir, name: str, model: str, task, side: str = "A or B") -> Path:
    """The experiment's folder; one line naming the experiments there when it is not one
    (`side`: where the name was given)."""
    folder = Path(exp_dir) / f"{name}_{model}_{task.name}"
    if name and "/" not in name and (folder / "config.json").is_file():
        return folder
    # (imported here: fine_tune.experiment brings in torch, which a comparison never needs)
    from fine_tune.experiment import Experiment
    Experiment(exp_dir, name, model, task.name).require(flag=side)
    raise UserError(f"experiment {name!r} not found in --exp_dir {exp_dir}")  # (not reached)


def seed_group(exp_dir, model: str, task_name: str, name: str, side: str = "A or B") -> list[str]:
    """The experiments of `name`'s seed group as `python -m fine_tune.report` forms it (same
    task, method and settings but those experiment_rows.NOT_A_DIFFERENCE lists), in
    folder order."""
    task = get_task(task_name)
    folder = _folder(exp_dir, name, model, task, side)
    mine = experiment_row(folder, None)
    if mine is None:
        raise UserError(f"--seed_groups: {folder} has no readable config.json and "
                        "model_config.json, so its seed group cannot be formed: name the "
                        "experiments of each side separated by commas instead")
    suffix = f"_{model}_{task.name}"
    members = [other.name[:-len(suffix)] for other in sorted(Path(exp_dir).iterdir())
               if other.is_dir() and other.name.endswith(suffix)
               and (row := experiment_row(other, None)) is not None and row["_key"] == mine["_key"]]
    return members


def _load(exp_dir, model: str, task, name: str, split: str, ckpt, side: str) -> dict:
    folder = _folder(exp_dir, name, model, task, side)
    metric = get_task(task.trained_as).metrics[0]
    if ckpt == "best":
        best = require_best(folder, name, task, "--ckpt best")  # (or one line saying why not)
        step, amp, chosen = best.step, best.amp, f"the best {metric} on {best.split}"
    else:
        step, amp, chosen = int(ckpt), None, "--ckpt"
    try:
        gold, predicted, amp, fingerprint = load_predictions(folder, task, split, step, amp)
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise UserError(f"{folder}/eval_predictions/{split} is damaged ({error}): evaluate "
                        f"{name} again with run_fine_tune_eval.py --dataset {split}"
                        f"{exp_dir_flag(folder)}") from None
    if predicted.shape != gold.shape:
        raise UserError(f"{folder}/eval_predictions/{split}/{step}-{amp}.npy has "
                        f"{len(predicted)} rows, the split {len(gold)}: evaluate {name} again "
                        f"with run_fine_tune_eval.py --dataset {split} --ckpt {step}"
                        f"{exp_dir_flag(folder)}")
    return {"experiment": name, "step": step, "amp": amp, "chosen": chosen, "gold": gold,
            "predicted": predicted, "fingerprint": fingerprint}


def compare_experiments(exp_dir, model, task_name, a_names: list[str], b_names: list[str],
                        split=None, ckpt="best", resamples=10000, seed=0,
                        confidence=0.95) -> tuple[dict[str, Difference], dict]:
    """Load the predictions of each experiment of A and of B (each at its own best
    checkpoint, in the precision that made it best, or all at step `ckpt`) on `split`
    (default: the task's dev split) and compare them with paired_bootstrap. Returns
    ({metric: Difference}, info): info names the task, split, rows, fingerprint, the
    p-value's test, and per experiment its step, amp and how the step was chosen."""
    task = get_task(task_name)
    split = split or dev_split(task)
    if split not in task.labelled_splits():
        raise UserError(f"--split {split}: --task {task.name} has no labelled split {split!r} "
                        f"(its: {', '.join(task.labelled_splits())})")
    for side, names in (("A", a_names), ("B", b_names)):
        if not names:
            raise UserError(f"{side} names no experiment")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"{side} names {', '.join(twice)} more than once")
    shared = [name for name in a_names if name in b_names]
    if shared and not (len(a_names) == len(b_names) == 1):  # (one against itself: 0, [0, 0])
        raise UserError(f"A and B share {', '.join(shared)}: a paired comparison needs groups "
                        "with no experiment in common (with --seed_groups, name experiments of "
                        "two different seed groups)")
    loaded = {side.lower(): [_load(exp_dir, model, task, name, split, ckpt, side) for name in names]
              for side, names in (("A", a_names), ("B", b_names))}
    first = loaded["a"][0]
    for entry in loaded["a"][1:] + loaded["b"]:
        if (entry["fingerprint"] != first["fingerprint"]
                or entry["gold"].shape != first["gold"].shape):
            raise UserError(f"{first['experiment']} and {entry['experiment']} were scored on "
                            f"different rows of {split} (fingerprints {first['fingerprint']} and "
                            f"{entry['fingerprint']}): evaluate both on the same data file with "
                            f"run_fine_tune_eval.py --dataset {split}")
    started = time.perf_counter()
    differences = paired_bootstrap(task, first["gold"], [e["predicted"] for e in loaded["a"]],
                                   [e["predicted"] for e in loaded["b"]], resamples, seed,
                                   confidence)
    seconds = time.perf_counter() - started
    keep = ("experiment", "step", "amp", "chosen")
    info = {"task": task.name, "split": split, "rows": len(first["gold"]),
            "fingerprint": first["fingerprint"], "resamples": resamples, "seed": seed,
            "confidence": confidence, "seconds": seconds,
            "p_value_test": p_value_test(len(a_names), len(b_names), resamples),
            "a": [{key: e[key] for key in keep} for e in loaded["a"]],
            "b": [{key: e[key] for key in keep} for e in loaded["b"]]}
    return differences, info

