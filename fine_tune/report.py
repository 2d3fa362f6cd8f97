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
instead, leaving the full report alone.
"""
import json
import re
from pathlib import Path

from fine_tune.cli import new_parser, positive_int
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import TASKS_BY_NAME, TRAINABLE_TASKS, get_task
from fine_tune.io import atomic_write_text
from fine_tune.results import best_step, dev_split, preferred_rows, read_results

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

# The GLUE benchmark's nine tasks in its leaderboard's order (AX, the diagnostic set, is
# not part of the score), and the (split, metric) values whose unweighted mean is each
# task's score: MNLI is one task, its matched and mismatched accuracies averaged; MRPC and
# QQP average F1 and accuracy, STS-B Pearson and Spearman; CoLA is its MCC, the others
# accuracy (Wang et al., GLUE, ICLR 2019, section 3: "For tasks with multiple metrics ...
# we use an unweighted average of the metrics as the score for the task when computing
# the overall macro-average"; their Table 4 averages recompute that way).
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
GLUE_SCORE = {"mnli": (("dev_matched", "accuracy"), ("dev_mismatched", "accuracy")),
              "mrpc": (("dev", "f1"), ("dev", "accuracy")),
              "qqp": (("dev", "f1"), ("dev", "accuracy")),
              "stsb": (("dev", "pearson"), ("dev", "spearman")),
              "cola": (("dev", "mcc"),)}
GLUE_COLUMN = "GLUE score ×100"
# The order of the report's per-task tables: GLUE's, then any other task.
TASK_ORDER = GLUE_TASKS + tuple(name for name in TASKS_BY_NAME if name not in GLUE_TASKS)


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


def glue_components(task) -> tuple:
    """The (split, metric) values averaged into the task's GLUE score."""
    return GLUE_SCORE.get(task.name, ((dev_split(task), "accuracy"),))


def glue_task_score(task, row: dict) -> float | None:
    """The task's GLUE score (a fraction) of one report row: the unweighted mean of its
    components at the selected checkpoint; None when one is missing or the task is not
    one of GLUE's nine."""
    if task.name not in GLUE_TASKS:
        return None
    values = [row.get(f"{split} {metric}") for split, metric in glue_components(task)]
    if any(value is None or value != value for value in values):  # (NaN: no score)
        return None
    return sum(values) / len(values)


def experiment_row(folder: Path, select_on: str | None) -> dict | None:
    """One experiment's report row: its settings, the selected checkpoint (the best on
    --select_on, by fine_tune.results) and the value of every metric of its task at that
    checkpoint on every evaluated split, from its results store. None for a folder that
    is not an experiment."""
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
    tables = {split: preferred_rows(table) for split in task.labelled_splits()
              if (table := read_results(folder, split)) is not None and len(table)}
    first = task.metrics[0]
    # The rule of fine_tune.results.best_checkpoint (on the preferred rows), on any split.
    chosen = (best_step(tables[selection], first)
              if selection in tables and first in tables[selection].columns else None)
    amps = {}  # split -> the precision of the row its scores come from
    if chosen is not None:
        row["selected_step"] = chosen
        selected = tables[selection].loc[tables[selection]["step"] == chosen].iloc[0]
        amps[selection] = str(selected["amp"])
        speed = selected.get("examples_per_s")
        if speed is not None and speed == speed:  # (results written before it was recorded lack it)
            row["examples/s"] = f"{float(speed):.1f}"
            row["eval device"] = selected["device"]
    for split, table in tables.items():
        at_chosen = table.loc[table["step"] == chosen] if chosen is not None else table.iloc[:0]
        for metric in task.metrics:
            if len(at_chosen) and metric in table.columns:
                row[f"{split} {metric}"] = float(at_chosen[metric].iloc[0])
                amps.setdefault(split, str(at_chosen["amp"].iloc[0]))
        at = best_step(table, first) if first in table.columns else None
        if at is not None:
            best_row = table.loc[table["step"] == at].iloc[0]
            row[f"{split} best {first}"] = (f"{best_row[first]:.4f} @{at}"
                                            + (" (bf16)" if best_row["amp"] == "bf16" else ""))
    if amps:
        row["amp"] = describe_precisions(amps, selection)
    row["_glue"] = glue_task_score(task, row)
    # Same method (as the report names it: older configs lack "method") and settings.
    row["_key"] = json.dumps({k: v for k, v in config.items() if k not in NOT_A_DIFFERENCE}
                             | {"method": row["method"]}, sort_keys=True, default=str)
    return row


def describe_precisions(amps: dict, selection: str) -> str:
    """The amp column: the precision of the selected row, and that of any split whose row
    at the same step has another one (fp32 is preferred where a step has both)."""
    main = amps.get(selection, next(iter(amps.values())))
    other = [f"{split}: {amp}" for split, amp in amps.items() if amp != main]
    return main + (f" ({', '.join(other)})" if other else "")


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
    entries, groups = [], []
    for _, group in frame.groupby("_key", sort=False):
        entry = {"experiments": ", ".join(group["experiment"]), "method": group["method"].iloc[0],
                 "n": len(group)}
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
    from fine_tune.compare import compare_experiments
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
                             "sweep reports its own (default: every folder)")
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
