"""Reading evaluation results back: which checkpoint scored best on a task's dev split."""
from pathlib import Path

from fine_tune.errors import UserError
from fine_tune.glue import get_task

# The training log's table in each experiment folder (fine_tune.trainer writes it).
TRAIN_LOG = "train_log.csv"


def dev_split(task) -> str:
    """The split a task's "best" checkpoint is chosen on: its dev split (MNLI's matched one;
    AX's is its MNLI model's)."""
    trained = get_task(task.trained_as)
    labelled = [split for split in trained.labelled_splits() if split.startswith("dev")]
    return labelled[0]


def best_step(table, metric: str) -> int | None:
    """The step of the highest `metric` in a results table (the first on a tie); None when
    no row has a score (every value NaN, e.g. a correlation of constant predictions)."""
    scored = table.dropna(subset=[metric])
    return None if scored.empty else int(scored.loc[scored[metric].idxmax(), "step"])


def best_dev_step(folder: Path, experiment: str, task, flag: str) -> tuple[int, str]:
    """(step, split) of the best score of the task's first metric on its dev split, from
    run_fine_tune_eval.py's results file in the experiment folder `folder`."""
    import pandas as pd
    trained = get_task(task.trained_as)
    split = dev_split(task)
    results = Path(folder) / f"results_{split}.csv"
    if not results.is_file():
        raise UserError(f"{flag}: {results} not found, so there is no best checkpoint on dev "
                        f"yet: run python run_fine_tune_eval.py --experiment {experiment} "
                        f"--task {trained.name} --dataset {split}, or name a step")
    step = best_step(pd.read_csv(results), trained.metrics[0])
    if step is None:
        raise UserError(f"{flag}: no checkpoint in {results} has a {trained.metrics[0]} score "
                        "(all are empty): name a step")
    return step, split
