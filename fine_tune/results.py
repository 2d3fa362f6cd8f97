"""The results store of an experiment, and the one definition of its "best" checkpoint.

Each experiment folder keeps, per labelled split it was scored on:

    results_<split>.csv     one row per (step, amp): step, amp (the precision the scores
                            were computed in: fp32 or bf16), every metric of the task,
                            examples_per_s, device, checkpoint (on disk / pruned)
    eval_predictions/<split>/gold.npy           the gold labels (task label ids) or scores,
                                                in file order
    eval_predictions/<split>/rows.json          rows and a fingerprint of the split's rows
    eval_predictions/<split>/<step>-<amp>.npy   that checkpoint's predicted label ids (int8)
                                                or scores (float32), in file order
    log/eval/<split>/       tensorboard points of the table (rewritten from it)

The table only grows: every evaluation (run_fine_tune_eval.py, with or without --ckpt, and
--eval_during_training) merges its rows under a lock, replacing only the rows of the same
step and precision, and writes the file whole and atomically. Rows of checkpoints that
--keep_checkpoints deleted stay, marked `pruned`, and so do their per-row predictions,
which fine_tune.compare reads.

"Best" (`best_checkpoint`) is the highest first metric of the task on its dev split (MNLI:
dev_matched), an fp32 row preferred over a bf16 row of the same step, the earliest step on
a tie. Pruning, the report, submit, export, compare and `--ckpt best` all use it.
"""
import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fine_tune.errors import UserError
from fine_tune.glue import get_task
from fine_tune.io import first_line

# The training log's table in each experiment folder (fine_tune/training/log.py writes it).
TRAIN_LOG = "train_log.csv"
PREDICTIONS = "eval_predictions"
STORE_LOCK = ".results.lock"
# Precisions in the order "best" prefers them for one step. Tables written before the
# precision was recorded read as "unrecorded" (evaluation defaulted to fp32 then, but
# --eval_during_training used the run's --amp).
PRECISIONS = ("fp32", "unrecorded", "bf16")
ON_DISK, PRUNED = "on disk", "pruned"


def dev_split(task) -> str:
    """The split a task's "best" checkpoint is chosen on: its dev split (MNLI's matched one;
    AX's is its MNLI model's)."""
    trained = get_task(task.trained_as)
    labelled = [split for split in trained.labelled_splits() if split.startswith("dev")]
    return labelled[0]


def results_path(folder, split: str) -> Path:
    return Path(folder) / f"results_{split}.csv"


def read_results(folder, split: str):
    """The results table of a split (a pandas DataFrame, sorted by step and precision), or
    None when the experiment was never scored on it. Older tables get amp 'unrecorded';
    the checkpoint column is refreshed from the folder."""
    import pandas as pd
    path = results_path(folder, split)
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise UserError(f"{path} is damaged ({first_line(error)}): restore it from a copy, or "
                        "move it away and evaluate the experiment again with "
                        "run_fine_tune_eval.py (scores of pruned checkpoints are then lost)") from None
    if "step" not in table.columns:
        raise UserError(f"{path} is damaged (no 'step' column): restore it from a copy, or move "
                        "it away and evaluate the experiment again with run_fine_tune_eval.py "
                        "(scores of pruned checkpoints are then lost)")
    return _normalised(table, Path(folder))


def _normalised(table, folder: Path):
    table = table.copy()
    table["step"] = table["step"].astype(int)
    if "amp" not in table.columns:
        table.insert(1, "amp", "unrecorded")
    table["amp"] = table["amp"].fillna("unrecorded").astype(str)
    table["checkpoint"] = [ON_DISK if (folder / f"model-{step}.pt").is_file() else PRUNED
                           for step in table["step"]]
    order = table["amp"].map({amp: i for i, amp in enumerate(PRECISIONS)}).fillna(len(PRECISIONS))
    return (table.assign(_order=order).sort_values(["step", "_order"], kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def preferred_rows(table):
    """One row per step: the fp32 row where there is one, else the next in PRECISIONS."""
    return table.drop_duplicates("step", keep="first")  # (sorted by step, then preference)


def best_step(table, metric: str) -> int | None:
    """The step of the highest `metric` (the first on a tie) over the preferred row of each
    step; None when no row has a score (every value NaN, e.g. a correlation of constant
    predictions)."""
    if "amp" in table.columns:
        table = preferred_rows(table)
    scored = table.dropna(subset=[metric])
    return None if scored.empty else int(scored.loc[scored[metric].idxmax(), "step"])


@dataclass(frozen=True)
class Best:
    step: int
    amp: str          # the precision of the row that made it best
    split: str        # the split it was chosen on (the task's dev split)
    scores: dict      # {metric: value} of that row
    ties: tuple = ()  # later steps with the same score


def best_checkpoint(folder, task) -> Best | None:
    """The best checkpoint of an experiment (see the module's docstring), from its store;
    None when it has no scored dev row. `task` is a fine_tune.glue.Task (AX: its MNLI
    model's dev split)."""
    trained = get_task(task.trained_as)
    split, metric = dev_split(task), trained.metrics[0]
    table = read_results(folder, split)
    if table is None:
        return None
    rows = preferred_rows(table)
    step = best_step(rows, metric)
    if step is None:
        return None
    row = rows.loc[rows["step"] == step].iloc[0]
    ties = tuple(int(s) for s in rows.loc[(rows[metric] == row[metric]) & (rows["step"] > step), "step"])
    return Best(step, str(row["amp"]), split,
                {name: float(row[name]) for name in trained.metrics if name in row}, ties)


def exp_dir_flag(folder) -> str:
    """' --exp_dir DIR' for a command that must find the experiment folder `folder`
    (nothing when DIR is the default, exp)."""
    parent = Path(folder).parent
    return "" if parent == Path("exp") or parent == Path("exp").resolve() else f" --exp_dir {parent}"


def require_best(folder: Path, experiment: str, task, flag: str) -> Best:
    """`best_checkpoint`, or one line saying why there is none."""
    trained = get_task(task.trained_as)
    split = dev_split(task)
    if not results_path(folder, split).is_file():
        raise UserError(f"{flag}: {results_path(folder, split)} not found, so there is no best "
                        f"checkpoint on dev yet: run python run_fine_tune_eval.py --experiment "
                        f"{experiment} --task {trained.name} --dataset {split}"
                        f"{exp_dir_flag(folder)}, or name a step")
    best = best_checkpoint(folder, task)
    if best is None:
        raise UserError(f"{flag}: no checkpoint in {results_path(folder, split)} has a "
                        f"{trained.metrics[0]} score (all are empty): name a step")
    return best


def best_dev_step(folder: Path, experiment: str, task, flag: str) -> tuple[int, str]:
    """(step, split) of `require_best`."""
    best = require_best(folder, experiment, task, flag)
    return best.step, best.split


def describe_best(best: Best, task) -> str:
    """'model-S.pt, the best <metric> on <split> (value, amp; ties)' for the commands that
    choose it."""
    metric = get_task(task.trained_as).metrics[0]
    tie = (f"; tied with step{'s' * (len(best.ties) > 1)} {', '.join(map(str, best.ties))}, the "
           "earliest wins" if best.ties else "")
    return (f"model-{best.step}.pt, the best {metric} on {best.split} "
            f"({best.scores.get(metric, float('nan')):.4f}, {best.amp}{tie})")


# ---- writing ------------------------------------------------------------------

@contextmanager
def store_lock(folder):
    """Exclusive for the read-merge-write of the experiment's results (the trainer's
    evaluation during training and run_fine_tune_eval.py may run at once)."""
    fd = os.open(Path(folder) / STORE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def rows_fingerprint(index, gold: np.ndarray) -> str:
    """Identifies a split's rows (their GLUE index and gold values, in file order): two
    experiments' predictions are compared only when it is equal."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(i) for i in index]).encode())
    digest.update(np.ascontiguousarray(gold).tobytes())
    return digest.hexdigest()[:16]


def prediction_path(folder, split: str, step: int, amp: str) -> Path:
    return Path(folder) / PREDICTIONS / split / f"{step}-{amp}.npy"


def compact(task, predicted: np.ndarray) -> np.ndarray:
    """Label ids as int8, scores as float32."""
    return predicted.astype(np.float32 if task.regression else np.int8)


def merge_results(experiment, task, split: str, rows: list[dict], predicted: dict,
                  gold: np.ndarray, index, tensorboard: bool = True) -> "object":
    """Merge `rows` (each with 'step' and 'amp') into results_<split>.csv, keeping every
    other row; save each row's per-example predictions (`predicted`: {(step, amp):
    values}); rewrite the split's tensorboard points from the merged table. Under the
    store's lock; every file written atomically. Returns the merged table."""
    import pandas as pd

    from fine_tune.io import atomic_write_json
    folder = experiment.path
    with store_lock(folder):
        saved = folder / PREDICTIONS / split
        saved.mkdir(parents=True, exist_ok=True)
        fingerprint = rows_fingerprint(index, gold)
        described = saved / "rows.json"
        if described.is_file():
            try:
                known = json.loads(described.read_text())
            except (OSError, ValueError):
                known = None
            if known and known.get("fingerprint") != fingerprint:
                # Other rows than before (a changed dev file): earlier predictions are not
                # comparable with these; they are removed, their scores stay in the table.
                for old in saved.glob("*.npy"):
                    old.unlink()
        _save_array(gold.astype(np.float32 if task.regression else np.int8), saved / "gold.npy")
        atomic_write_json({"rows": int(len(gold)), "fingerprint": fingerprint}, described)
        for (step, amp), values in predicted.items():
            _save_array(compact(task, values), prediction_path(folder, split, step, amp))

        new = pd.DataFrame(rows)
        table = read_results(folder, split)
        if table is not None:
            keys = set(zip(new["step"], new["amp"]))
            keep = [key not in keys for key in zip(table["step"], table["amp"])]
            new = pd.concat([table[keep], new], ignore_index=True)
        columns = ["step", "amp", *get_task(task.trained_as).metrics, "examples_per_s", "device"]
        new = new[[c for c in columns if c in new.columns]
                  + [c for c in new.columns if c not in columns and c != "checkpoint"]]
        table = _normalised(new, folder)
        experiment.write_text(results_path(folder, split).name, table.to_csv(index=False))
        if tensorboard:  # (--report_to without tensorboard: no event files)
            write_tensorboard(folder, task, split, table)
    return table


def mark_checkpoints(folder) -> None:
    """Refresh every results table's checkpoint column (after pruning)."""
    from fine_tune.io import atomic_write_text
    folder = Path(folder)
    with store_lock(folder):
        for path in sorted(folder.glob("results_*.csv")):
            split = path.stem[len("results_"):]
            table = read_results(folder, split)
            atomic_write_text(table.to_csv(index=False), path)


def write_tensorboard(folder: Path, task, split: str, table) -> None:
    """log/eval/<split>/ from the whole table, in one new event file that replaces the
    earlier ones: the points always equal the store. fp32 (and unrecorded) rows are
    eval/<split>/<metric>, bf16 rows eval/<split>/<metric>_bf16."""
    from torch.utils.tensorboard import SummaryWriter
    logdir = folder / "log" / "eval" / split
    logdir.mkdir(parents=True, exist_ok=True)
    before = set(logdir.glob("events.out.tfevents.*"))
    with SummaryWriter(logdir) as writer:
        for row in table.to_dict("records"):
            suffix = "_bf16" if row["amp"] == "bf16" else ""
            for name in get_task(task.trained_as).metrics:
                writer.add_scalar(f"eval/{split}/{name}{suffix}", row[name], int(row["step"]))
    for old in before:
        old.unlink(missing_ok=True)


def _save_array(values: np.ndarray, path: Path) -> None:
    import io

    from fine_tune.io import atomic_write_bytes
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    atomic_write_bytes(buffer.getvalue(), path)


def load_predictions(folder, task, split: str, step: int, amp: str | None = None):
    """(gold, predicted, amp, fingerprint) of one scored checkpoint from the store: the
    fp32 predictions when there are both (or those of `amp`). One line when missing."""
    folder = Path(folder)
    saved = folder / PREDICTIONS / split
    for candidate in ((amp,) if amp else PRECISIONS):
        path = prediction_path(folder, split, step, candidate)
        if path.is_file():
            described = json.loads((saved / "rows.json").read_text())
            return (np.load(saved / "gold.npy"), np.load(path), candidate,
                    described["fingerprint"])
    have = sorted(p.stem for p in saved.glob("*-*.npy")) if saved.is_dir() else []
    raise UserError(f"{folder.name} has no per-example predictions of model-{step}.pt on {split}"
                    + (f" in {amp}" if amp else "")
                    + (f" (it has: {', '.join(have)})" if have else
                       " (experiments evaluated before this store existed have none)")
                    + f": run python run_fine_tune_eval.py --experiment "
                    f"{folder.name.rsplit('_', 2)[0]} --task {get_task(task.trained_as).name} "
                    f"--dataset {split} --ckpt {step}{exp_dir_flag(folder)}")
