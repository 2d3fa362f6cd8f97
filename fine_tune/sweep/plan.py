"""A sweep's plan: a TOML file turned into runs, each exactly a command a user could type.

    [defaults]                      flags every run gets (left out where a script lacks one)
    exp_dir = "exp"
    [[run]]
    script = "run_lad_distil.py"    one of the entry scripts
    experiment = "LAD_mu{mu}_s{seed}"
    mu = [500, 1000]                a list: one run per value (a grid over every list)
    seed = [1, 2, 3]
    dynamic_padding = true          a switch: --dynamic_padding
    gpus = 2                        (not a flag) GPUs of this run: a torchrun launch
    [run.search]                    (not a flag) an Optuna search instead of a grid
    trials = 8
    mu = "log:100:2000"

This module reads the plan, expands it, checks every run's flags with its script's own
parser (so a mistake in run 57 is found before run 1 trains), orders runs after the
experiments they read, and makes a search's trials (`trial_run`). Whether a run is done,
was killed (continue it with --resume) or is new is told from its experiment's folder by
state.py (its `state` is imported here too: `plans.state(run)`). It starts nothing: the
rest of fine_tune.sweep does.
"""
import contextlib
import io
import itertools
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from fine_tune import cli
from fine_tune.errors import UserError
from fine_tune.glue import get_task
from fine_tune.sweep.state import _config
# (re-exported: the sweep and the tests ask the plan for a run's state, `plans.state(run)`)
from fine_tune.sweep.state import state  # noqa: F401

# script -> (its parser, what it does: trains an experiment, evaluates or predicts one)
SCRIPTS = {
    "run_fine_tune.py": (cli.teacher_parser, "train"),
    "run_lad_distil.py": (cli.lad_parser, "train"),
    "run_lad_no_distil.py": (cli.lad_no_parser, "train"),
    "run_probing_lad.py": (cli.probing_parser, "train"),
    "run_alp_distil.py": (cli.alp_parser, "train"),
    "run_pkd_distill.py": (cli.pkd_parser, "train"),
    "run_kd_distil.py": (cli.kd_parser, "train"),
    "run_tinybert_distil.py": (cli.tinybert_parser, "train"),
    "run_minilm_distil.py": (cli.minilm_parser, "train"),
    "run_fine_tune_eval.py": (cli.eval_parser, "eval"),
    "generate_test_prediction.py": (cli.predict_parser, "predict"),
}
NOT_FLAGS = ("script", "gpus", "search")  # keys of a [[run]] table that are the sweep's own


@cache
def parser_of(script: str):
    return SCRIPTS[script][0]()


def takes(script: str, key: str) -> bool:
    return f"--{key}" in parser_of(script)._option_string_actions


def to_argv(flags: dict) -> list[str]:
    """{'lr': 1e-4, 'dynamic_padding': True, 'overwrite': False} -> --lr 0.0001 --dynamic_padding"""
    argv = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif value is not False:
            argv += [f"--{key}", str(value)]
    return argv


@dataclass
class Run:
    number: str                 # "3", or "5.t2" for trial 2 of the search in run 5
    script: str
    flags: dict                 # flag -> value, in the order the command shows them
    gpus: int = 1
    gpus_given: bool = False    # the plan set `gpus` (Slurm: an evaluation asks for GPUs only then)
    search: dict | None = None  # the [run.search] table
    settings: dict = field(default_factory=dict)  # the flags as the script's parser reads them
    needs: list = field(default_factory=list)     # numbers of the runs it waits for
    trial: dict | None = None   # a search's trial: {"number": k, "params": {flag: value}}

    @property
    def kind(self) -> str:
        return SCRIPTS[self.script][1]

    @property
    def experiment(self) -> str:
        return str(self.flags.get("experiment", "?"))

    @property
    def label(self) -> str:
        return f"run {self.number} ({self.script} --experiment {self.experiment})"

    def argv(self) -> list[str]:
        return to_argv(self.flags)

    def command(self) -> str:
        import shlex
        return "python " + " ".join(shlex.quote(part) for part in [self.script, *self.argv()])

    # ---- the experiment it writes or reads ---------------------------------------------
    def folder(self) -> Path:
        """The experiment folder it trains, evaluates or predicts with. An evaluation or
        prediction without `task` in the plan finds its experiment's folder when it runs
        (the scripts' own rule: the one folder of that name under any task)."""
        s = self.settings
        if self.flags.get("task") in (None, False) and self.kind != "train":
            found = sorted(Path(s["exp_dir"]).glob(f"{s['experiment']}_{s['model']}_*/config.json"))
            if len(found) == 1:
                return found[0].parent
        return Path(s["exp_dir"]) / f"{s['experiment']}_{s['model']}_{get_task(s['task']).trained_as}"

    def task(self):
        """Its GLUE task (for a task-less evaluation, its experiment's)."""
        if self.flags.get("task") in (None, False) and self.kind != "train":
            recorded = (_config(self.folder()) or {}).get("task")
            if recorded:
                return get_task(recorded)
        return get_task(self.settings["task"])

    def writes(self) -> tuple | None:
        """(exp_dir, experiment, model, task) of the experiment a training run makes."""
        if self.kind != "train" or self.search is not None:
            return None
        s = self.settings
        return (Path(s["exp_dir"]).resolve(), s["experiment"], s["model"], s["task"])

    def reads(self) -> list[tuple]:
        """The experiments this run needs: a student's teacher, an evaluation's experiment
        (task None: any task)."""
        s = self.settings
        exp_dir = Path(s["exp_dir"]).resolve()
        if self.kind == "train":
            return ([(exp_dir, s["teacher_exp"], s["tmodel"], s["task"])]
                    if "teacher_exp" in s else [])
        given = self.flags.get("task") not in (None, False)
        task = get_task(s["task"]).trained_as if given else None  # (None: any task)
        return [(exp_dir, s["experiment"], s["model"], task)]


@dataclass
class Plan:
    path: Path
    runs: list
    exp_dir: Path
    baseline: str | None = None   # [sweep] baseline: the report's --baseline
    plots: bool = False           # [sweep] plots: the report's --plots

    def run(self, number: str) -> Run:
        return next(run for run in self.runs if run.number == number)


# ---- reading --------------------------------------------------------------------------

def load(path, overrides: dict | None = None) -> Plan:
    """Read, expand and check a plan; a mistake anywhere is one UserError naming the run."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"plan {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read plan {path} ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path} is not valid TOML: {error}") from None
    unknown = set(document) - {"defaults", "run", "sweep"}
    if unknown:
        raise UserError(f"{path}: unknown table {sorted(unknown)[0]!r}; a plan has [defaults], "
                        "[sweep] and [[run]] tables")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UserError(f"{path}: defaults must be a table ([defaults] and flags under it)")
    defaults = dict(defaults)
    tables = document.get("run", [])
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UserError(f"{path} has no [[run]] tables: add one [[run]] table per command")
    sweep = document.get("sweep", {})
    unknown = set(sweep) - {"baseline", "plots"} if isinstance(sweep, dict) else {"sweep"}
    if unknown:
        raise UserError(f"{path}: [sweep] takes baseline = \"NAME\" and plots = true, not "
                        f"{sorted(unknown)[0]}")
    if not isinstance(sweep.get("baseline", ""), str) or not isinstance(sweep.get("plots", False), bool):
        raise UserError(f"{path}: [sweep] baseline is an experiment name in quotes and plots "
                        "is true or false")
    overrides = overrides or {}
    defaults |= overrides
    runs = []
    for position, table in enumerate(tables, 1):
        runs += _expand(path, position, dict(table), defaults, overrides, start=len(runs))
    for key in defaults:  # (a default some scripts lack is fine; one no script takes, a typo)
        if not any(takes(script, key) for script in SCRIPTS):
            import difflib
            known = sorted({name[2:] for script in SCRIPTS
                            for name in parser_of(script)._option_string_actions if name.startswith("--")})
            hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise UserError(f"{path}: [defaults] {key} is a flag of none of the entry scripts; "
                            + (f"did you mean {hint[0]}?" if hint else "remove it or fix its name"))
    for run in runs:
        run.settings = _check(path, run)
        if run.search is not None:
            space(path, run)
    exp_dirs = {Path(run.settings["exp_dir"]).resolve() for run in runs}
    if len(exp_dirs) > 1:
        raise UserError(f"{path}: the runs use several exp_dir folders ({', '.join(map(str, sorted(exp_dirs)))}); "
                        "a sweep keeps its experiments, logs and report in one: set exp_dir in "
                        "[defaults] only")
    _link(path, runs)
    return Plan(path, runs, Path(runs[0].settings["exp_dir"]), sweep.get("baseline"),
                bool(sweep.get("plots", False)))


def _expand(path: Path, position: int, table: dict, defaults: dict, overrides: dict,
            start: int) -> list:
    where = f"{path}: [[run]] number {position}"
    script = table.pop("script", None)
    if not isinstance(script, str) or script not in SCRIPTS:
        raise UserError(f"{where}: script = {script!r} is not one of {', '.join(SCRIPTS)}")
    gpus_given = "gpus" in table
    gpus = table.pop("gpus", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise UserError(f"{where}: gpus = {gpus!r} must be a positive integer")
    search = table.pop("search", None)
    if search is not None and not isinstance(search, dict):
        raise UserError(f"{where}: search must be a table ([run.search])")
    for key, value in table.items():
        if key.startswith("-"):
            raise UserError(f"{where}: write flags without the leading dashes ({key.lstrip('-')} = ...)")
        if isinstance(value, dict):
            raise UserError(f"{where}: {key} is a table; a flag's value is a number, a string, "
                            "true / false or a list of those")
        if not takes(script, key):
            close = [name for name in parser_of(script)._option_string_actions
                     if name.startswith("--")]
            import difflib
            hint = difflib.get_close_matches(f"--{key}", close, n=1, cutoff=0.6)
            raise UserError(f"{where} ({script}): no flag --{key}"
                            + (f"; did you mean {hint[0][2:]}?" if hint else ""))
    flags = table | {key: value for key, value in overrides.items() if key in table}
    flags |= {key: value for key, value in defaults.items()
              if key not in flags and takes(script, key)}
    if "experiment" in flags:  # first in the command, as people write them
        flags = {"experiment": flags.pop("experiment")} | flags
    grid = [key for key, value in flags.items() if isinstance(value, list)]
    empty = [key for key in grid if not flags[key]]
    if empty:
        raise UserError(f"{where}: {empty[0]} = [] lists no value: give at least one, or leave "
                        "the flag out")
    if search is not None and grid:
        raise UserError(f"{where}: a run with [run.search] cannot also list values "
                        f"({', '.join(grid)}): search them, or make one run per value")
    runs = []
    for values in itertools.product(*(flags[key] for key in grid)):
        chosen = flags | dict(zip(grid, values))
        if search is None:
            chosen = fill_placeholders(chosen, f"{where}")
        runs.append(Run(str(start + len(runs) + 1), script, chosen, gpus, gpus_given, search))
    return runs


def fill_placeholders(flags: dict, where: str) -> dict:
    """{name} in a string value -> that flag's value ("LAD_mu{mu}_s{seed}" -> LAD_mu500_s1)."""
    filled = {}
    for key, value in flags.items():
        if isinstance(value, str) and "{" in value:
            try:
                value = value.format_map({k: v for k, v in flags.items()})
            except KeyError as error:
                raise UserError(f"{where}: {key} = {value!r} names {{{error.args[0]}}}, which is "
                                "not a flag of this run") from None
            except (ValueError, IndexError, AttributeError, TypeError) as error:
                raise UserError(f"{where}: {key} = {value!r} is not a valid pattern ({error})") from None
        filled[key] = value
    return filled


def _check(path: Path, run: Run) -> dict:
    """The script's own parser on the run's flags: its message, naming the run, on a mistake."""
    if run.search is None:
        return _parse(path, run, run.flags)
    settings = None
    for values in corner_values(path, run):  # a trial's flags at each end of each range
        parsed = _parse(path, run, fill_placeholders(run.flags | values, run.label))
        settings = settings or parsed
    return settings


def _parse(path: Path, run: Run, flags: dict) -> dict:
    parser = parser_of(run.script)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return vars(parser.parse_args(to_argv(flags)))
    except SystemExit:
        message = captured.getvalue().strip().splitlines()
        text = message[-1] if message else "its flags are refused"
        text = re.sub(r"^error: ", "", text)
        text = re.sub(r" \(see .* --help\)$", f" (see python {run.script} --help)", text)
        raise UserError(f"{path}: {run.label}: {text}") from None


def _link(path: Path, runs: list) -> None:
    """Each run waits for the runs that train the experiments it reads; two runs training
    one experiment are refused."""
    searches = {}
    for run in runs:  # (a search's study and trial folders are named by its experiment)
        if run.search is not None:
            key = (run.experiment, run.settings["model"], run.settings["task"])
            if key in searches:
                raise UserError(f"{path}: {searches[key].label} and {run.label} search under one "
                                "experiment name: give them different experiment names")
            searches[key] = run
    writers = {}
    for run in runs:
        key = run.writes()
        if key is None:
            continue
        if key in writers:
            raise UserError(f"{path}: {writers[key].label} and {run.label} both train "
                            f"{key[1]}_{key[2]}_{key[3]}: give them different experiment names "
                            "(e.g. experiment = \"NAME_s{seed}\")")
        writers[key] = run
    for run in runs:
        for exp_dir, experiment, model, task in run.reads():
            found = False
            for (d, e, m, t), writer in writers.items():
                if (d, e, m) == (exp_dir, experiment, model) and task in (None, t) and writer is not run:
                    run.needs.append(writer.number)
                    _check_teacher_step(path, run, writer)
                    found = True
            if not found and not _on_disk(exp_dir, experiment, model, task):
                _refuse_unknown(path, run, experiment, model, exp_dir, writers)


def _on_disk(exp_dir: Path, experiment: str, model: str, task) -> bool:
    pattern = f"{experiment}_{model}_{task or '*'}/config.json"
    return any(exp_dir.glob(pattern))


def _refuse_unknown(path: Path, run: Run, experiment: str, model: str, exp_dir: Path,
                    writers: dict) -> None:
    """A run reads an experiment that the plan does not train and exp_dir does not hold:
    one line, with the experiments there are and the closest name."""
    import difflib
    planned = sorted({e for (_, e, m, _), writer in writers.items() if m == model and writer is not run})
    held = sorted({p.parent.name.rsplit("_", 2)[0]
                   for p in exp_dir.glob(f"*_{model}_*/config.json")} - set(planned))
    flag = "teacher_exp" if run.kind == "train" else "experiment"
    close = difflib.get_close_matches(experiment, planned + held, n=1, cutoff=0.6)
    raise UserError(f"{path}: {run.label}: {flag} {experiment!r} is neither trained by the plan "
                    f"nor in {exp_dir}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" (the plan trains: {', '.join(planned) or 'nothing'}; "
                    f"{exp_dir.name}/ holds: {', '.join(held) or 'nothing'})")


def _check_teacher_step(path: Path, student: Run, teacher: Run) -> None:
    tckpt, total = student.settings.get("tckpt"), teacher.settings.get("total_step")
    if student.kind != "train" or tckpt is None or total is None:
        return
    every = teacher.settings.get("ckpt_step")
    if tckpt > total or (tckpt != total and every and tckpt % every):
        raise UserError(f"{path}: {student.label} reads teacher checkpoint --tckpt {tckpt}, which "
                        f"{teacher.label} never saves (it saves every {every} steps up to "
                        f"{total}): use one of those steps")
    keep = teacher.settings.get("keep_checkpoints")
    if keep and every:
        saved = sorted(set(range(every, total + 1, every)) | {total})
        kept = saved[-keep:]
        if tckpt not in kept:
            raise UserError(f"{path}: {student.label} reads teacher checkpoint --tckpt {tckpt}, which "
                            f"{teacher.label}'s keep_checkpoints = {keep} deletes before the student "
                            f"starts (it keeps steps {', '.join(map(str, kept))} and its best one): "
                            f"use one of those steps, or raise keep_checkpoints to "
                            f"{len(saved) - saved.index(tckpt)}")


# ---- searches -------------------------------------------------------------------------

SPACE = re.compile(r"^(log|int|float):([^:]+):([^:]+)$")


def space(path, run: Run) -> dict:
    """The [run.search] space: flag -> optuna distribution (`trials` and `pruner` apart)."""
    import optuna
    distributions = {}
    for key, value in run.search.items():
        if key in ("trials", "pruner"):
            continue
        if not takes(run.script, key):
            raise UserError(f"{path}: {run.label}: [run.search] {key} is not a flag of {run.script}")
        if isinstance(value, list) and value:
            distributions[key] = optuna.distributions.CategoricalDistribution(value)
            continue
        match = SPACE.match(str(value))
        try:
            kind, low, high = match.groups()
            if kind == "int":
                distributions[key] = optuna.distributions.IntDistribution(int(low), int(high))
            else:
                distributions[key] = optuna.distributions.FloatDistribution(
                    float(low), float(high), log=kind == "log")
        except (AttributeError, ValueError):
            raise UserError(f"{path}: {run.label}: [run.search] {key} = {value!r}: write "
                            "\"log:LOW:HIGH\", \"float:LOW:HIGH\", \"int:LOW:HIGH\" or a list of "
                            "choices (LOW < HIGH, LOW > 0 for log)") from None
    trials = run.search.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"{path}: {run.label}: [run.search] needs trials = N (a positive integer)")
    if run.search.get("pruner", "median") not in ("median", "none"):
        raise UserError(f"{path}: {run.label}: [run.search] pruner must be \"median\" or \"none\"")
    if not distributions:
        raise UserError(f"{path}: {run.label}: [run.search] names no flag to search")
    if run.kind != "train":
        raise UserError(f"{path}: {run.label}: [run.search] is for training scripts")
    if not run.settings:  # (checked again once the flags are parsed)
        return distributions
    from fine_tune.results import dev_split
    task = get_task(run.settings["task"])
    split = dev_split(task)
    if split not in (run.settings.get("eval_during_training") or []):
        raise UserError(f"{path}: {run.label}: a search reads each trial's {task.metrics[0]} on "
                        f"{split} as it trains: add eval_during_training = \"{split}\" to the run")
    return distributions


def corner_values(path, run: Run) -> list[dict]:
    """Points of the search space that together hold each range's two ends and every
    choice, to check a trial's flags before any trial starts."""
    ends = {key: (list(d.choices) if hasattr(d, "choices") else [d.low, d.high])
            for key, d in space(path, run).items()}
    return [{key: values[min(i, len(values) - 1)] for key, values in ends.items()}
            for i in range(max(map(len, ends.values())))]


def trial_run(search: Run, k: int, params: dict) -> Run:
    """Trial k of a search: the run's flags with the trial's values, experiment <name>_t<k>."""
    flags = fill_placeholders(search.flags | params, search.label)
    flags["experiment"] = f"{flags['experiment']}_t{k}"
    trial = Run(f"{search.number}.t{k}", search.script, flags, search.gpus, search.gpus_given,
                None, needs=list(search.needs))
    trial.settings = _parse(Path("plan"), trial, trial.flags)
    trial.trial = {"number": k, "params": dict(params)}
    return trial
