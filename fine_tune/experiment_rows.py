"""One experiment folder read as a row of the report, and the key that groups seeds:
`experiment_row` gives its settings (method, teacher, student size and parameter count,
seed), the checkpoint chosen on a split (the best, by fine_tune.results) and every metric
of its task at that checkpoint on every evaluated split, from its results store, with
its GLUE task score; runs with the same `_key` differ only in the settings
NOT_A_DIFFERENCE lists (a seed group). `python -m fine_tune.report` tabulates these rows;
`python -m fine_tune.compare --seed_groups` forms its groups from the same keys.
"""
import json
from pathlib import Path

from fine_tune.glue import TASKS_BY_NAME
from fine_tune.results import PREDICTIONS, best_step, dev_split, preferred_rows, read_results

# The script that trained an experiment (config.json's command) and the flag naming its
# variant, if any: the method column.
METHODS = {"run_fine_tune.py": ("teacher", None), "run_lad_distil.py": ("LAD", None),
           "run_lad_no_distil.py": ("LAD-NO", None), "run_probing_lad.py": ("partial LAD", None),
           "run_alp_distil.py": ("ALP-KD", "alp_exp"), "run_pkd_distill.py": ("BERT-PKD", "pkd_loss"),
           "run_kd_distil.py": ("KD", None), "run_tinybert_distil.py": ("TinyBERT", None),
           "run_minilm_distil.py": ("MiniLM", None)}
# Methods whose student never saw its teacher's outputs: the report shows no teacher.
WITHOUT_TEACHER = ("labels only",)
# Settings that do not make two runs different experiments when grouping seeds.
NOT_A_DIFFERENCE = {"seed", "experiment", "command", "method", "resume", "overwrite", "log_step",
                    "ckpt_step", "device_id", "tdevice_id", "gate_device_id", "data_dir", "exp_dir",
                    "eval_during_training", "eval_batch_size", "keep_checkpoints",
                    "world_size", "tf32", "compile", "report_to"}  # (torchrun keeps the global batch: the same experiment)

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
    method = method_of(config)
    row = {"experiment": folder.name, "task": task.name, "method": method,
           "teacher": (f"{config['teacher_exp']}:{config['tckpt']}"
                       if "teacher_exp" in config and method not in WITHOUT_TEACHER else ""),
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
    row["_rows"] = scored_rows(folder, selection)
    # Same method (as the report names it: older configs lack "method"), settings and
    # scored rows (runs scored on other rows of the split are not one seed group).
    row["_key"] = json.dumps({k: v for k, v in config.items() if k not in NOT_A_DIFFERENCE}
                             | {"method": row["method"], "rows": row["_rows"]},
                             sort_keys=True, default=str)
    return row


def scored_rows(folder: Path, split: str) -> str | None:
    """'<rows> rows, <fingerprint>' of the rows the experiment was scored on in `split`
    (fine_tune.results keeps them), None where it has no predictions there."""
    try:
        described = json.loads((folder / PREDICTIONS / split / "rows.json").read_text())
        return f"{int(described['rows'])} rows, {described['fingerprint']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_precisions(amps: dict, selection: str) -> str:
    """The amp column: the precision of the selected row, and that of any split whose row
    at the same step has another one (fp32 is preferred where a step has both)."""
    main = amps.get(selection, next(iter(amps.values())))
    other = [f"{split}: {amp}" for split, amp in amps.items() if amp != main]
    return main + (f" ({', '.join(other)})" if other else "")

