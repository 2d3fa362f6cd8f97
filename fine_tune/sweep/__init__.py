"""`python -m fine_tune.sweep PLAN.toml`: run a plan of experiments, resumably, and report.

The plan (plan.py) lists runs of the entry scripts; each is exactly the command it
prints. Runs start when the experiments they read have been trained (a student after its
teacher, an evaluation after its experiment); a run whose experiment is finished is
skipped, one that was killed is continued with --resume, so running a plan again after a
crash does only what is left. Runs execute as local processes (one per --cpus slot or
per --gpus device), as Slurm jobs through submitit, or as trials of an Optuna search. At
the end: a table of what ran, was skipped or failed, and the report of the sweep's
experiments in <exp_dir>/<sweep>/report.md.

Read in this order:

- plan.py       the plan: the TOML file read, expanded into `Run`s and checked by each
                script's parser; the order of runs (`needs`); a search's space and trials
- state.py      what a run's experiment folder says: done, killed (--resume), new, being
                trained by another process (its lock), or trained with other settings
- cli.py        the command: flags, the checks before anything starts, --dry_run, `sweep`
- scheduler.py  `Sweep`: the loop (when a run may start, in which slot, with --resume or
                not), failures skipping dependants, waiting on another sweep's lock
- runs.py       `Launch`, `Outcome`, a run's command line and log, ROOT, what is printed
- local.py      `LocalExecutor`: processes on this machine (--cpus, --gpus)
- slurm.py      `SubmititExecutor`: submitit jobs (Slurm, or submitit's local executor)
- search.py     `Search`: a [run.search] as an Optuna study, with pruning
- summary.py    the final table, runs.csv, failed runs' logs, the report

No two modules import each other: state.py imports none of the others; plan.py imports
state.py; runs.py imports plan.py; local.py, slurm.py and search.py import runs.py;
scheduler.py imports search.py; summary.py imports scheduler.py; cli.py imports the
rest. optuna, submitit, pandas, fine_tune.experiment, fine_tune.results and
fine_tune.report are imported where they are used, not when the sweep starts.
"""
from fine_tune.sweep.cli import assignment, build_parser, gpu_list, main, minutes, sweep
from fine_tune.sweep.local import LocalExecutor
from fine_tune.sweep.runs import (ROOT, Launch, Outcome, command_line, duration, last_line, now,
                                  say, script_path, tail)
from fine_tune.sweep.scheduler import Sweep
from fine_tune.sweep.search import Search
from fine_tune.sweep.slurm import Command, SubmititExecutor
from fine_tune.sweep.summary import conclude, table, write_report

__all__ = ["ROOT", "Command", "Launch", "LocalExecutor", "Outcome", "Search", "SubmititExecutor",
           "Sweep", "assignment", "build_parser", "command_line", "conclude", "duration",
           "gpu_list", "last_line", "main", "minutes", "now", "say", "script_path", "sweep",
           "table", "tail", "write_report"]
