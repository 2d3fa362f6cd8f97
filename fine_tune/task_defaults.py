"""Per-task defaults of the training scripts: one table, keyed by task, then by script.

A flag of PER_TASK left out takes the value of DEFAULTS[--task][script]; a flag given
always wins. The parsers (fine_tune.cli) resolve them as they parse, so every caller of
`parse_args` sees the values used, and config.json records them.

- MNLI: the seed commands' values, for every script exactly as before this table.
- QNLI, QQP, SST-2, MRPC, RTE: the authors' per-task scripts (IKMLab/LAD,
  scripts/tune_<task>_teacher.sh and scripts/<task>.sh; docs/tasks.md).
  Their teachers count steps; their students count epochs and a warmup rate, which
  resolve_schedule (fine_tune.training.schedule) turns into steps once the data is read.
- CoLA, STS-B, WNLI (neither repository has settings for them): our choice, untuned.
  Teachers: the recipe of transformers' run_glue example (lr 2e-5, batch 32, 3 epochs;
  5 for WNLI) with BERT's 10% warmup, as steps on GLUE's row counts; students: RTE's
  LAD row (the authors' smallest task).
- The other students (LAD-NO, partial LAD, ALP-KD, BERT-PKD): the authors published
  per-task settings for LAD only, so on every task but MNLI they take LAD's row; on MNLI
  each keeps its own seed command's values (SEED_DIFFERENCES).
- The baselines (KD, TinyBERT, MiniLM): LAD's row, with TinyBERT's and MiniLM's own loss
  weights (METHOD_DIFFERENCES).

Plain data and no heavy imports (the parsers and `--help` load it).
"""
from fine_tune.glue import TRAINABLE_TASKS

# The flags whose defaults depend on --task. A schedule is either steps
# (total_step, warmup_step) or the authors' epochs and warmup rate (epoch, warmup_rate).
PER_TASK = ("lr", "gate_lr", "total_step", "warmup_step", "epoch", "warmup_rate",
            "softmax_temp", "soft_weight", "hard_weight", "mu")
# Each pair sets one thing in two forms: giving either form takes the default of neither.
SCHEDULE = (("total_step", "epoch"), ("warmup_step", "warmup_rate"))
STUDENTS = ("lad", "lad_no", "probing", "alp", "pkd", "kd", "tinybert", "minilm")  # cli's *_parser
SCRIPTS = ("teacher", *STUDENTS)


def _teacher(lr, total_step, warmup_step):
    return dict(lr=lr, total_step=total_step, warmup_step=warmup_step, epoch=None,
                warmup_rate=None)


def _lad(lr, gate_lr, schedule, softmax_temp, soft_weight, hard_weight, mu):
    """`schedule`: (epochs, warmup rate), or {"total_step": .., "warmup_step": ..}."""
    steps = schedule if isinstance(schedule, dict) else dict(epoch=float(schedule[0]),
                                                             warmup_rate=schedule[1])
    return dict(dict.fromkeys(("total_step", "warmup_step", "epoch", "warmup_rate")) | steps,
                lr=lr, gate_lr=gate_lr, softmax_temp=softmax_temp, soft_weight=soft_weight,
                hard_weight=hard_weight, mu=mu)


TEACHER = {  # --lr, --total_step, --warmup_step
    "mnli": _teacher(3e-5, 36816, 10000),
    "qnli": _teacher(3e-5, 9822, 3274),
    "qqp": _teacher(2e-5, 34110, 10233),
    "sst2": _teacher(2e-5, 6315, 1894),
    "mrpc": _teacher(7e-5, 345, 1),
    "rte": _teacher(7e-5, 385, 115),
    # ours: 3 epochs (WNLI 5) of GLUE's train rows at batch 32, 10% of them warmup
    "cola": _teacher(2e-5, 802, 80),
    "stsb": _teacher(2e-5, 539, 54),
    "wnli": _teacher(2e-5, 99, 10),
}

_RTE = _lad(7e-4, 3e-5, (10, 0.1), 10.0, 0.5, 0.5, 1000.0)
LAD = {  # --lr, --gate_lr, schedule, --softmax_temp, --soft_weight, --hard_weight, --mu
    # The seed's MNLI command counts steps (4 epochs, warmup 4908: the authors' script
    # gives 4909).
    "mnli": _lad(1e-4, 5e-7, dict(total_step=49088, warmup_step=4908), 10.0, 0.5, 0.5, 500.0),
    "qnli": _lad(1e-4, 1e-6, (4, 0.1), 10.0, 0.5, 0.5, 1000.0),
    "qqp": _lad(5e-4, 5e-7, (5, 0.1), 10.0, 0.7, 0.3, 1000.0),
    "sst2": _lad(1e-4, 1e-6, (20, 0.3), 20.0, 0.5, 0.5, 1000.0),
    "mrpc": _lad(7e-4, 5e-6, (20, 0.1), 10.0, 0.5, 0.5, 500.0),
    "rte": _RTE,
    "cola": _RTE,  # ours
    "stsb": _RTE,  # ours (--softmax_temp unused: a regression)
    "wnli": _RTE,  # ours
}

# Where a student's seed command differs from LAD's (MNLI only: the authors' scripts for
# the other tasks are LAD's).
SEED_DIFFERENCES = {
    ("mnli", "lad_no"): dict(lr=5e-5, gate_lr=1e-6),
    ("mnli", "probing"): dict(gate_lr=1e-6),
    ("mnli", "pkd"): dict(lr=5e-5),
}

# The baselines' own loss settings, on every task (their schedule and learning rate are
# LAD's row, so that an ablation differs only in what it distils): TinyBERT's prediction
# loss at T = 1 without gold labels and its intermediate terms summed unweighted (Jiao et
# al.'s code); MiniLM's three relation terms summed (MiniLMv2, equation 4).
METHOD_DIFFERENCES = {
    "tinybert": dict(softmax_temp=1.0, soft_weight=1.0, hard_weight=0.0, mu=1.0),
    "minilm": dict(mu=1.0),
}

DEFAULTS = {task: {"teacher": TEACHER[task],
                   **{script: LAD[task] | METHOD_DIFFERENCES.get(script, {})
                      | SEED_DIFFERENCES.get((task, script), {})
                      for script in STUDENTS}}
            for task in TRAINABLE_TASKS}


def _number(value) -> str:
    """As the README and the authors' scripts write it: 1e-4, 3e-5, 0.1, 10, 36816."""
    if 0 < abs(value) < 0.01:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def describe(script: str, name: str) -> str:
    """--help's default of one flag: its value per task, tasks of equal value together
    ('mnli 1e-4; qqp 5e-4; mrpc, rte 7e-4'); for a schedule, which form each task uses
    ('' when no task uses this form)."""
    groups = {}
    for task in TRAINABLE_TASKS:
        value = DEFAULTS[task][script][name]
        if value is None:  # this task's schedule is in the other form
            other = next(a if b == name else b for a, b in SCHEDULE if name in (a, b))
            shown = f"by --{other}"
        else:
            shown = _number(value)
        groups.setdefault(shown, []).append(task)
    if len(groups) == 1 and next(iter(groups)).startswith("by "):
        return ""  # no task uses this form by default
    return "; ".join(f"{', '.join(tasks)} {shown}" for shown, tasks in groups.items())


def resolve(namespace, script: str) -> None:
    """Fill the per-task flags left out (None) from DEFAULTS[namespace.task][script], in
    place. A schedule pair given in either form takes no default (--epoch given: no
    --total_step default, and the other way round)."""
    values = DEFAULTS[namespace.task][script]
    given = {name for name in PER_TASK if getattr(namespace, name, None) is not None}
    for name in PER_TASK:
        pair = next((pair for pair in SCHEDULE if name in pair), (name,))
        if hasattr(namespace, name) and not given & set(pair):
            setattr(namespace, name, values[name])
