"""The tables of all experiments: `python -m fine_tune.report`.

One table per task, one row per experiment folder under --exp_dir: method, teacher,
student size and parameter count, seed, the checkpoint chosen on --select_on (default:
the task's dev split, MNLI's dev_matched, by fine_tune.results' definition of "best"),
the precision of the rows its scores come from, and for each evaluated split every
metric of the task at that checkpoint and the best first metric on that split itself,
with its step. Under each, runs that differ only in --seed grouped into mean ± sample
standard deviation, with the task's GLUE score; last, a GLUE summary: one row per
method, one column per task, and their average. Printed, and written as exp/report.csv
(every experiment, one row each, with a task column) and exp/report.md; with --plots,
PNGs in exp/plots/: each task's dev metric against step (one line per experiment), each
experiment's training loss terms, and LAD's gate values. A report of a subset (--task,
--filter) is written to report_<task>_<filter>.csv/.md and plots_<task>_<filter>/
instead, leaving the full report alone; one of --folders without --output_dir to
report_folders-<hash of the folder names>.csv/.md.

Here: the tables, the seed groups, the GLUE summary, --baseline and the command line; each
experiment's row comes from fine_tune.experiment_rows, --baseline's differences from
fine_tune.comparison.
"""
import re
from pathlib import Path

from fine_tune.cli import new_parser, positive_int
from fine_tune.comparison import compare_experiments
from fine_tune.errors import UserError, run_cli
from fine_tune.experiment_rows import GLUE_TASKS, experiment_row, glue_components
# (re-exported: they were defined here before fine_tune.experiment_rows held them)
from fine_tune.experiment_rows import (GLUE_SCORE, METHODS, NOT_A_DIFFERENCE,  # noqa: F401
                                       describe_precisions, glue_task_score, method_of,
                                       parameter_count)
from fine_tune.glue import TASKS_BY_NAME, TRAINABLE_TASKS, get_task
from fine_tune.io import atomic_write_text
from fine_tune.results import dev_split

# The seed groups' column of the task's GLUE score.
GLUE_COLUMN = "GLUE score ×100"
# The order of the report's per-task tables: GLUE's, then any other task.
TASK_ORDER = GLUE_TASKS + tuple(name for name in TASKS_BY_NAME if name not in GLUE_TASKS)


def score_columns(task) -> list[str]:
    """The task's score columns in the report's order: per labelled split, every metric
    at the selected checkpoint, then the best first metric on the split itself."""
    return [column for split in task.labelled_splits()
            for column in [f"{split} {metric}" for metric in task.metrics]
            + [f"{split} best {task.metrics[0]}"]]


def task_table(task, rows: list[dict]):
    """One task's table (a pandas DataFrame): one row per experiment of `task` among
    `rows` (experiment_row's), in their order, with only this task's score columns (those
    no experiment has are left out). Columns can be added to it per task (e.g. a
    comparison with a baseline experiment of the same task) before it is printed."""
    import pandas as pd
    own = [row for row in rows if row["task"] == task.name]
    frame = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in own])
    leading = ["experiment", "task", "method", "teacher", "layers", "width", "parameters", "seed",
               "selected_step", "amp", "examples/s", "eval device"]
    columns = [c for c in leading + score_columns(task) if c in frame.columns]
    return frame[columns]


def seed_groups(task, rows: list[dict]):
    """Mean ± sample std (n) of every score of one task's experiments over runs that differ
    only in --seed (the method, as named in the report, included), with the task's GLUE
    score (×100). Returns (table, groups): groups are (method, experiments, GLUE scores)
    for the summary."""
    import pandas as pd
    own = [row for row in rows if row["task"] == task.name]
    frame = pd.DataFrame(own)
    scores = [c for c in score_columns(task) if " best " not in c and c in frame.columns]
    # Runs scored on other rows of the split are never one group; where the task's runs
    # were scored on different rows, a column says which rows each group was scored on.
    several_rows = "_rows" in frame and frame["_rows"].dropna().nunique() > 1
    entries, groups = [], []
    for _, group in frame.groupby("_key", sort=False):
        entry = {"experiments": ", ".join(group["experiment"]), "method": group["method"].iloc[0],
                 "n": len(group)}
        if several_rows:
            rows = group["_rows"].iloc[0]
            entry["scored on"] = rows if isinstance(rows, str) else "no predictions kept"
        if "amp" in group:
            entry["amp"] = ", ".join(dict.fromkeys(group["amp"].dropna()))
        for column in scores:
            entry[column] = spread(group[column].dropna())
        glue = group["_glue"].dropna().astype(float)
        if task.name in GLUE_TASKS:
            entry[GLUE_COLUMN] = spread(glue * 100, digits=2)
        entries.append(entry)
        groups.append((entry["method"], entry["experiments"], list(glue)))
    return pd.DataFrame(entries), groups


def spread(values, digits: int = 4) -> str:
    if len(values) > 1:  # the sample standard deviation
        return (f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f} "
                f"(n={len(values)})")
    if len(values):  # one run: no spread to show
        return f"{values.iloc[0]:.{digits}f} (n=1)"
    return ""


def glue_summary(groups: dict) -> tuple:
    """The GLUE summary: one row per method, one column per GLUE task reported (the mean
    task score ×100 of the method's seed group; of its best one, by that mean, where it
    has several, e.g. a sweep), and their average where the method has every column.
    `groups`: task name -> seed_groups' groups. Returns (table, notes)."""
    import pandas as pd
    tasks = [name for name in GLUE_TASKS if name in groups]
    methods = list(dict.fromkeys(method for name in tasks for method, _, _ in groups[name]))
    table, footnotes, notes = [], [], []
    for method in methods:
        entry = {"method": method}
        means = []
        for name in tasks:
            label = get_task(name).folder
            scored = [(sum(values) / len(values), len(values), experiments)
                      for m, experiments, values in groups[name] if m == method and values]
            if not scored:
                entry[label] = ""
                continue
            mean, n, used = max(scored, key=lambda item: item[0])  # (the first on a tie)
            entry[label] = f"{mean * 100:.2f} (n={n})"
            means.append(mean)
            if len(scored) > 1:  # e.g. a sweep: say which group the cell is
                others = "; ".join(f"{e} ({m * 100:.2f})" for m, _, e in scored if e != used)
                footnotes.append(f"{method} on {label}: {len(scored)} seed groups, the one with "
                                 f"the best mean is used: {used}; the others: {others}")
                entry[label] += f" [{len(footnotes)}]"
        if means and len(means) == len(tasks):
            entry["GLUE average ×100"] = f"{sum(means) / len(means) * 100:.2f}"
        else:
            entry["GLUE average ×100"] = ""
            lacking = [get_task(name).folder for name in tasks if entry[get_task(name).folder] == ""
                       and any(values for _, _, values in groups[name])]
            if lacking:  # (a task no experiment has a score on is named once, below)
                notes.append(f"{method}: no average (no GLUE score on {', '.join(lacking)})")
        table.append(entry)
    for name in tasks:
        if not any(values for _, _, values in groups[name]):
            task = get_task(name)
            needs = " and ".join(f"{split} {metric}" for split, metric in glue_components(task))
            notes.append(f"{task.folder}: no GLUE score, which needs {needs} of the selected "
                         "checkpoint: evaluate the missing split with run_fine_tune_eval.py "
                         "(no average without it)")
    missing = [get_task(name).folder for name in GLUE_TASKS if name not in groups]
    scale = ("GLUE scores ×100, as the leaderboard shows them, on the dev splits (not GLUE's "
             "test sets): per task, the unweighted mean of its metrics at the selected "
             "checkpoint (MNLI: dev_matched and dev_mismatched accuracy averaged, one task; "
             "MRPC, QQP: F1 and accuracy; STS-B: Pearson and Spearman; CoLA: MCC; others: "
             "accuracy); the average: the unweighted mean over the tasks; (n=): runs averaged.")
    if missing:
        coverage = (f"GLUE tasks missing: {', '.join(missing)}; the average is over the "
                    f"{len(tasks)} task{'s' * (len(tasks) != 1)} present, not the official "
                    "nine-task GLUE score.")
    else:
        coverage = ("All nine GLUE tasks present (dev scores: still not the leaderboard's "
                    "test-set score).")
    return (pd.DataFrame(table),
            [scale, coverage] + [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)] + notes)


def report(args) -> None:
    import pandas as pd
    exp_dir = Path(args.exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"--exp_dir {exp_dir} is not a folder")
    rows = [row for folder in sorted(exp_dir.iterdir()) if folder.is_dir()
            and (not args.filter or args.filter in folder.name)
            and (not args.folders or folder.name in args.folders)
            and (row := experiment_row(folder, args.select_on)) is not None
            and (not args.task or row["task"] == args.task)]
    if not rows:
        raise UserError(f"no experiments under --exp_dir {exp_dir}"
                        + (f" matching --filter {args.filter}" if args.filter else "")
                        + (f" for --task {args.task}" if args.task else ""))
    if args.baseline and args.select_on and args.select_on != "dev_matched" and \
            args.select_on != "dev":
        raise UserError(f"--baseline compares each experiment at its best checkpoint on the "
                        f"dev split; with --select_on {args.select_on} its columns would not "
                        "match the reported checkpoints: leave out one of the two")
    if args.select_on:
        lacking = sorted({row["task"] for row in rows}
                         - {name for name, task in TASKS_BY_NAME.items()
                            if args.select_on in task.labelled_splits()})
        if lacking:
            splits = ", ".join(TASKS_BY_NAME[lacking[0]].labelled_splits())
            raise UserError(f"--select_on {args.select_on}: --task {lacking[0]} has no labelled "
                            f"split {args.select_on!r} (its: {splits}); pick one of those, or "
                            "report one task at a time with --task")
    tasks = [get_task(name) for name in TASK_ORDER if any(row["task"] == name for row in rows)]
    tables = {task.name: task_table(task, rows) for task in tasks}
    grouped = {task.name: seed_groups(task, rows) for task in tasks}
    baseline_notes = []
    if args.baseline:
        baseline_notes = add_baseline(args, tasks, rows, tables, grouped)
    summary, notes = glue_summary({name: groups for name, (_, groups) in grouped.items()
                                   if name in GLUE_TASKS})
    # A report of a subset (--task, --filter) goes to files of its own: the full report
    # (report.csv, plots/) is never overwritten by part of it.
    suffix = "".join(f"_{re.sub(r'[^A-Za-z0-9.-]+', '-', value)}"
                     for value in (args.task, args.filter) if value)
    if args.folders and not args.output_dir:  # (a sweep names its own --output_dir)
        import hashlib
        chosen = ",".join(sorted(args.folders)).encode()
        suffix += f"_folders-{hashlib.sha1(chosen).hexdigest()[:8]}"
    selection = (f"--select_on {args.select_on}" if args.select_on
                 else "each task's dev split (MNLI: dev_matched)")
    header = (f"Scores of the checkpoint with the best first metric on {selection}; "
              "'best' columns: the best checkpoint on that split itself (@step); amp: the "
              "precision of the rows the scores come from (fp32 where a step has fp32 and "
              "bf16 rows; 'unrecorded': tables written before the precision was).")
    printed, sections = [header], [header]
    for task in tasks:
        table = tables[task.name].drop(columns="task")
        groups = grouped[task.name][0]
        title = f"{task.folder} ({task.name})"
        printed += [f"\n== {title} ==",
                    table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.4f}"),
                    "\nRuns that differ only in --seed:", groups.to_string(index=False, na_rep="")]
        sections += [f"## {title}", markdown(table), "Runs that differ only in --seed:",
                     markdown(groups)]
    if baseline_notes:
        printed += ["", *baseline_notes]
        sections += ["\n".join(f"- {n}" for n in baseline_notes)]
    if len(summary):
        printed += ["\n== GLUE summary ==", summary.to_string(index=False), *notes]
        sections += ["## GLUE summary", markdown(summary), "\n".join(f"- {n}" for n in notes)]
    print("\n".join(printed))
    everything = pd.concat(tables.values(), ignore_index=True)  # one row per experiment
    output = Path(args.output_dir) if args.output_dir else exp_dir
    output.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = output / f"report{suffix}.csv", output / f"report{suffix}.md"
    atomic_write_text(everything.to_csv(index=False), csv_path)
    atomic_write_text("\n\n".join(sections) + "\n", md_path)
    print(f"\nwritten to {csv_path} and {md_path}")
    if args.plots:
        from fine_tune.plots import write_plots
        folder = output / f"plots{suffix}"
        written = write_plots(folder, exp_dir, everything, args.select_on)
        print(f"plots ({len(written)}) written to {folder}: "
              + ", ".join(path.name for path in written))


def short_name(folder_name: str) -> str:
    """An experiment's --experiment from its folder name <experiment>_<model>_<task>."""
    return folder_name.rsplit("_", 2)[0]


def add_baseline(args, tasks, rows, tables, grouped) -> list[str]:
    """--baseline NAME: to every other experiment of a task that has an experiment NAME, and
    to every other seed group, the difference from NAME (from NAME's seed group) in each
    metric of the task on its dev split, each side at its best checkpoint, with the
    paired-bootstrap confidence interval and p-value of fine_tune.compare. Returns notes
    for the end of the report."""
    baseline = short_name(args.baseline) if re.search(r"_bert_[a-z0-9]+$", args.baseline) \
        else args.baseline
    notes, found = [], False
    for task in tasks:
        folders = {short_name(row["experiment"]) for row in rows if row["task"] == task.name}
        if baseline not in folders:
            continue
        found = True
        base_group = next((names for names in
                           ([short_name(f) for f in entry.split(", ")]
                            for entry in grouped[task.name][0]["experiments"]) if baseline in names))

        def difference(names, against):
            try:
                result, info = compare_experiments(args.exp_dir, "bert", task.name, names, against,
                                                   resamples=args.resamples, seed=0)
            except UserError as error:
                notes.append(f"{task.name}: {', '.join(names)} vs {', '.join(against)}: not "
                             f"compared ({error})")
                return {metric: "n/a" for metric in task.metrics}
            return {metric: f"{d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
                            + (f" p={d.p_value:.3g}" if d.p_value is not None else "")
                    for metric, d in result.items()}
        table = tables[task.name]
        cells = [difference([short_name(name)], [baseline]) if short_name(name) != baseline
                 else {metric: "(baseline)" for metric in task.metrics} for name in table["experiment"]]
        for metric in task.metrics:
            table[f"Δ {metric} vs {baseline}"] = [cell[metric] for cell in cells]
        groups = grouped[task.name][0]
        cells = []
        for entry in groups["experiments"]:
            names = [short_name(f) for f in entry.split(", ")]
            cells.append({metric: "(baseline)" for metric in task.metrics} if names == base_group
                         else difference(names, base_group))
        for metric in task.metrics:
            groups[f"Δ {metric} vs {baseline}'s group"] = [cell[metric] for cell in cells]
        notes.append(f"{task.name}: Δ columns are A − {baseline} on {dev_split(task)} (seed groups: "
                     f"mean over seeds minus {baseline}'s group's mean), each experiment at its "
                     f"best checkpoint, with a {args.resamples}-resample paired-bootstrap 95% "
                     "interval and a permutation-test p-value (python -m fine_tune.compare).")
    if not found:
        raise UserError(f"--baseline {args.baseline}: no experiment of that name among those "
                        "reported; name one of the report's experiments (without _bert_<task>)")
    return notes


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
    parser.add_argument("--folders", type=lambda text: [n for n in text.split(",") if n],
                        default=None, metavar="FOLDER[,FOLDER]",
                        help="only these experiment folders (<experiment>_<model>_<task>), as a "
                             "sweep reports its own; without --output_dir written to "
                             "report_folders-<hash>.csv/.md, never over the full report "
                             "(default: every folder)")
    parser.add_argument("--output_dir", default=None,
                        help="folder for report.csv, report.md and plots/ (default: --exp_dir)")
    parser.add_argument("--select_on", default=None,
                        help="split whose best checkpoint (by the task's first metric) is reported "
                             "on every split (default: the task's dev split)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="add to every experiment of a task that has an experiment NAME its "
                             "difference from NAME in each metric on the dev split (both at their "
                             "best checkpoints), with a paired-bootstrap 95%% interval and a "
                             "permutation p-value, and to every seed group its difference from "
                             "NAME's seed group (seeds and rows resampled); from the per-example "
                             "predictions evaluation keeps (python -m fine_tune.compare)")
    parser.add_argument("--resamples", type=positive_int, default=10000,
                        help="bootstrap resamples of --baseline's intervals")
    parser.add_argument("--plots", action="store_true",
                        help="also write PNGs to <exp_dir>/plots/: per task, the --select_on "
                             "split's first metric against step for every experiment; per "
                             "experiment, its training loss terms (train_log.csv) and, for LAD, "
                             "LAD-NO and partial LAD, each gate's mean z against step")
    return parser


if __name__ == "__main__":
    run_cli(report, build_parser().parse_args())
