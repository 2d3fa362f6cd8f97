"""A table of all experiments: `python -m fine_tune.report`.

One row per experiment folder under --exp_dir: task, method, teacher, student size and
parameter count, seed, and for each evaluated split the score of the checkpoint chosen
on --select_on (default: the task's dev split; MNLI's dev_matched) and the best score on
that split itself, with its step. Runs that differ only in --seed are grouped into
mean ± standard deviation in a second table. Printed, and written as exp/report.csv and
exp/report.md; with --plots, PNGs in exp/plots/: each task's dev metric against step
(one line per experiment), each experiment's training loss terms, and LAD's gate values.
A report of a subset (--task, --filter) is written to report_<task>_<filter>.csv/.md and
plots_<task>_<filter>/ instead, leaving the full report alone.
"""
import json
import re
from pathlib import Path

from fine_tune.cli import new_parser
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import TASKS_BY_NAME, TRAINABLE_TASKS
from fine_tune.io import atomic_write_text
from fine_tune.results import best_step, dev_split

# The script that trained an experiment (config.json's command) and the flag naming its
# variant, if any: the method column.
METHODS = {"run_fine_tune.py": ("teacher", None), "run_lad_distil.py": ("LAD", None),
           "run_lad_no_distil.py": ("LAD-NO", None), "run_probing_lad.py": ("partial LAD", None),
           "run_alp_distil.py": ("ALP-KD", "alp_exp"), "run_pkd_distill.py": ("BERT-PKD", "pkd_loss")}
# Settings that do not make two runs different experiments when grouping seeds.
NOT_A_DIFFERENCE = {"seed", "experiment", "command", "method", "resume", "overwrite", "log_step",
                    "ckpt_step", "device_id", "tdevice_id", "gate_device_id", "data_dir", "exp_dir",
                    "eval_during_training", "eval_batch_size", "keep_checkpoints",
                    "world_size", "tf32", "compile"}  # (torchrun keeps the global batch: the same experiment)


def method_of(config: dict) -> str:
    if "method" in config:  # recorded by the training scripts
        return config["method"]
    script = config.get("command", "").split(" ")[0].rsplit("/", 1)[-1]  # older experiments
    name, variant = METHODS.get(script, ("?", None))
    return f"{name} ({config[variant]})" if variant and variant in config else name


def parameter_count(model: dict) -> int:
    """A BERT classifier's parameters, from its architecture (model_config.json)."""
    h, f, layers = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    embeddings = (model["vocab_size"] + model["max_position_embeddings"]
                  + model["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    labels = len(model.get("id2label") or {0: 0, 1: 1})
    return embeddings + layers * layer + (h * h + h) + (h * labels + labels)


def experiment_row(folder: Path, select_on: str | None) -> dict | None:
    import pandas as pd
    try:
        config = json.loads((folder / "config.json").read_text())
        model = json.loads((folder / "model_config.json").read_text())
    except (OSError, ValueError):
        return None  # not an experiment, or a damaged one (evaluation names those)
    task = TASKS_BY_NAME.get(config.get("task"))
    if task is None:
        return None
    row = {"experiment": folder.name, "task": task.name, "method": method_of(config),
           "teacher": (f"{config['teacher_exp']}:{config['tckpt']}" if "teacher_exp" in config
                       else ""),
           "layers": model["num_hidden_layers"], "width": model["hidden_size"],
           "parameters": parameter_count(model), "seed": config.get("seed")}
    selection = select_on or dev_split(task)
    tables = {split: pd.read_csv(folder / f"results_{split}.csv") for split in task.labelled_splits()
              if (folder / f"results_{split}.csv").is_file()}
    chosen = None
    if selection in tables and len(tables[selection]):
        first = task.metrics[0]
        chosen = best_step(tables[selection], first)
    if chosen is not None:
        row["selected_step"] = chosen
        selected = tables[selection].loc[tables[selection]["step"] == chosen].iloc[0]
        if "examples_per_s" in selected:  # (results written before the speed was recorded lack it)
            row["examples/s"] = f"{float(selected['examples_per_s']):.1f}"
            row["eval device"] = selected["device"]
    for split, table in tables.items():
        metric = task.metrics[0]
        if chosen is not None and chosen in set(table["step"]):
            row[f"{split} {metric}"] = float(table.loc[table["step"] == chosen, metric].iloc[0])
        at = best_step(table, metric)
        if at is not None:
            best = table.loc[table["step"] == at].iloc[0]
            row[f"{split} best {metric}"] = f"{best[metric]:.4f} @{at}"
    # Same method (as the report names it: older configs lack "method") and settings.
    row["_key"] = json.dumps({k: v for k, v in config.items() if k not in NOT_A_DIFFERENCE}
                             | {"method": row["method"]}, sort_keys=True, default=str)
    return row


def seed_groups(rows):
    """Mean ± sample std (n) of every score over runs that differ only in --seed (the
    method, as named in the report, included)."""
    import pandas as pd
    frame = pd.DataFrame(rows)
    scores = [c for c in frame.columns if " best " not in c and c.split(" ")[0] in
              {s for t in TASKS_BY_NAME.values() for s in t.labelled_splits()}]
    groups = []
    for _, group in frame.groupby("_key", sort=False):
        entry = {"experiments": ", ".join(group["experiment"]), "task": group["task"].iloc[0],
                 "method": group["method"].iloc[0], "n": len(group)}
        for column in scores:
            values = group[column].dropna()
            if len(values) > 1:  # the sample standard deviation
                entry[column] = f"{values.mean():.4f} ± {values.std(ddof=1):.4f} (n={len(values)})"
            elif len(values):  # one run: no spread to show
                entry[column] = f"{values.iloc[0]:.4f} (n=1)"
        groups.append(entry)
    return pd.DataFrame(groups)


def report(args) -> None:
    import pandas as pd
    exp_dir = Path(args.exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"--exp_dir {exp_dir} is not a folder")
    rows = [row for folder in sorted(exp_dir.iterdir()) if folder.is_dir()
            and (not args.filter or args.filter in folder.name)
            and (row := experiment_row(folder, args.select_on)) is not None
            and (not args.task or row["task"] == args.task)]
    if not rows:
        raise UserError(f"no experiments under --exp_dir {exp_dir}"
                        + (f" matching --filter {args.filter}" if args.filter else "")
                        + (f" for --task {args.task}" if args.task else ""))
    if args.select_on:
        lacking = sorted({row["task"] for row in rows}
                         - {name for name, task in TASKS_BY_NAME.items()
                            if args.select_on in task.labelled_splits()})
        if lacking:
            splits = ", ".join(TASKS_BY_NAME[lacking[0]].labelled_splits())
            raise UserError(f"--select_on {args.select_on}: --task {lacking[0]} has no labelled "
                            f"split {args.select_on!r} (its: {splits}); pick one of those, or "
                            "report one task at a time with --task")
    table = pd.DataFrame(rows).drop(columns="_key")
    groups = seed_groups(rows)
    # A report of a subset (--task, --filter) goes to files of its own: the full report
    # (report.csv, plots/) is never overwritten by part of it.
    suffix = "".join(f"_{re.sub(r'[^A-Za-z0-9.-]+', '-', value)}"
                     for value in (args.task, args.filter) if value)
    selection = (f"--select_on {args.select_on}" if args.select_on
                 else "each task's dev split (MNLI: dev_matched)")
    header = (f"Scores of the checkpoint with the best first metric on {selection}; "
              "'best' columns: the best checkpoint on that split itself (@step).")
    text = table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4f}")
    print(header)
    print(text)
    print("\nRuns that differ only in --seed:")
    print(groups.to_string(index=False, na_rep=""))
    csv_path, md_path = exp_dir / f"report{suffix}.csv", exp_dir / f"report{suffix}.md"
    atomic_write_text(table.to_csv(index=False), csv_path)
    atomic_write_text(f"{header}\n\n{markdown(table)}\n\nRuns that differ only in --seed:\n\n"
                      f"{markdown(groups)}\n", md_path)
    print(f"\nwritten to {csv_path} and {md_path}")
    if args.plots:
        from fine_tune.plots import write_plots
        folder = exp_dir / f"plots{suffix}"
        written = write_plots(folder, exp_dir, table, args.select_on)
        print(f"plots ({len(written)}) written to {folder}: "
              + ", ".join(path.name for path in written))


def markdown(frame) -> str:
    """A Markdown table (pandas' to_markdown would need the tabulate package)."""
    def cell(value):
        if isinstance(value, float):
            return "" if value != value else f"{value:.4f}"  # NaN: not evaluated
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def build_parser():
    parser = new_parser(__doc__.split("\n\n")[0], prog="python -m fine_tune.report")
    parser.add_argument("--exp_dir", default="exp", help="folder holding all experiment folders")
    parser.add_argument("--task", choices=TRAINABLE_TASKS, default=None,
                        help="only experiments of this task (default: all)")
    parser.add_argument("--filter", default=None,
                        help="only experiment folders whose name contains this text")
    parser.add_argument("--select_on", default=None,
                        help="split whose best checkpoint (by the task's first metric) is reported "
                             "on every split (default: the task's dev split)")
    parser.add_argument("--plots", action="store_true",
                        help="also write PNGs to <exp_dir>/plots/: per task, the --select_on "
                             "split's first metric against step for every experiment; per "
                             "experiment, its training loss terms (train_log.csv) and, for LAD, "
                             "LAD-NO and partial LAD, each gate's mean z against step")
    return parser


if __name__ == "__main__":
    run_cli(report, build_parser().parse_args())
