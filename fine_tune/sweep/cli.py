"""`python -m fine_tune.sweep PLAN.toml`: run a plan of experiments, resumably, and report.

The command itself: its flags (`build_parser`, with the types of --set, --gpus and
--slurm_time), and `sweep`: the checks made before anything starts, --dry_run, the
executor (local.py or slurm.py), the loop (scheduler.py) under SIGTERM, and the end
(summary.py). The first paragraph above is the description --help prints.
"""
import signal
import sys
import time
from pathlib import Path

import fine_tune.sweep.plan as plans
from fine_tune.cli import new_parser, non_negative_int, positive_float, positive_int
from fine_tune.errors import Interrupted, UserError, run_cli
from fine_tune.sweep.local import LocalExecutor
from fine_tune.sweep.scheduler import Sweep
from fine_tune.sweep.slurm import SubmititExecutor
from fine_tune.sweep.summary import conclude
from fine_tune.sweep.tracking import plan_trackers, tracking
from fine_tune import trackers


def assignment(text: str) -> tuple[str, object]:
    """--set lr=1e-4 -> ('lr', 0.0001): the value read as TOML (a string when it is not)."""
    import argparse
    import tomllib
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().lstrip("-"), parsed


def gpu_list(text: str) -> list[int]:
    import argparse
    try:
        gpus = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU indices such as 0,1,2,3; got {text!r}") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"expected distinct GPU indices such as 0,1,2,3; got {text!r}")
    return gpus


def minutes(text: str) -> int:
    """--slurm_time: minutes, or HH:MM:SS as sbatch takes it."""
    import argparse
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            while len(parts) < 3:
                parts.insert(0, 0)
            hours, mins, secs = parts
            return max(1, hours * 60 + mins + (secs > 0))
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected minutes or HH:MM:SS, got {text!r}") from None


def build_parser():
    parser = new_parser(__doc__.split("\n\n")[0] + " See docs/sweeps.md for the plan's "
                        "format.", prog="python -m fine_tune.sweep")
    parser.add_argument("plan", help="the plan, a TOML file (plans/demo.toml, plans/lad_paper_rte.toml)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print every run's command, what it waits for and what it would do "
                             "now (start, resume, skip as done), after checking every run's "
                             "flags with its script's parser; starts nothing")
    parser.add_argument("--name", default=None,
                        help="the sweep's folder, <exp_dir>/<name>/ (logs/, report.md, "
                             "optuna.log) (default: the plan file's name without .toml)")
    parser.add_argument("--set", dest="overrides", type=assignment, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="set a flag for every run that takes it, over the plan's values "
                             "(repeatable; e.g. --set exp_dir=exp2 --set amp=bf16)")
    parser.add_argument("--executor", default="local", choices=("local", "slurm", "submitit_local"),
                        help="local: processes on this machine (--cpus, --gpus); slurm: one "
                             "submitit job per run on a Slurm cluster; submitit_local: the "
                             "same jobs through submitit's local executor, on this machine (to "
                             "try a plan's Slurm path)")
    parser.add_argument("--gpus", type=gpu_list, default=None, metavar="0,1,...",
                        help="local: one run per GPU at a time, with --device_id set to it (a "
                             "run with gpus = N in the plan takes N of them, under torchrun)")
    parser.add_argument("--cpus", type=positive_int, default=None, metavar="N",
                        help="local: N runs side by side on the CPU (--device_id -1), each "
                             "with cores/N threads unless OMP_NUM_THREADS is set (default "
                             "without --gpus: one run at a time, device flags as the plan says)")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="the report's baseline experiment (fine_tune.report --baseline; "
                             "default: [sweep] baseline in the plan, else none)")
    parser.add_argument("--poll", type=positive_float, default=2.0,
                        help="seconds between checks of running runs")
    slurm = parser.add_argument_group("Slurm (--executor slurm)")
    slurm.add_argument("--slurm_partition", default=None, help="partition of every job")
    slurm.add_argument("--slurm_gpus_per_run", type=non_negative_int, default=1,
                       help="GPUs of each training job (a run with gpus = N in the plan gets N "
                            "if more); 0: CPU-only jobs. A job with several runs its script "
                            "under torchrun, one process per GPU. Evaluation and prediction "
                            "jobs ask for GPUs only when the plan gives them gpus = N")
    slurm.add_argument("--slurm_time", type=minutes, default=None, metavar="MIN|HH:MM:SS",
                       help="time limit of each job, required with --executor slurm; a job "
                            "that reaches it is requeued and continues with --resume, as often "
                            "as it takes (submitit_local: default 5 minutes, without requeue)")
    slurm.add_argument("--slurm_array_parallelism", type=positive_int, default=None, metavar="N",
                       help="at most N of the sweep's jobs queued or running at once")
    slurm.add_argument("--slurm_option", type=assignment, action="append", default=[],
                       metavar="KEY=VALUE",
                       help="any other #SBATCH option, passed through (repeatable; e.g. "
                            "--slurm_option account=nlp --slurm_option constraint=a100)")
    return parser


def sweep(args) -> None:
    if args.executor != "local" and (args.gpus or args.cpus):
        raise UserError("--gpus and --cpus are for --executor local; Slurm jobs get "
                        "--slurm_gpus_per_run")
    if args.gpus and args.cpus:
        raise UserError("--gpus and --cpus are two executors' slots: pass one")
    if args.executor == "slurm" and args.slurm_time is None:
        raise UserError("--executor slurm needs --slurm_time (each job's limit, e.g. 24:00:00; "
                        "a run that reaches it is requeued and resumed)")
    plan = plans.load(args.plan, dict(args.overrides))
    too_big = [run for run in plan.runs if args.gpus and run.gpus > len(args.gpus)]
    if too_big:
        raise UserError(f"{too_big[0].label} asks for gpus = {too_big[0].gpus}; --gpus gives "
                        f"{len(args.gpus)}: give more GPUs or lower its gpus")
    several = [run for run in plan.runs if run.gpus > 1]
    if args.executor == "local" and not args.gpus and several:  # (never silently one process)
        raise UserError(f"{several[0].label} has gpus = {several[0].gpus}, a torchrun launch over "
                        f"that many GPUs: pass --gpus (e.g. --gpus "
                        f"{','.join(map(str, range(several[0].gpus)))}), run the plan with "
                        "--executor slurm, or remove gpus from the run to train it in one process")
    trackers.check(plan_trackers(plan))  # (--report_to: a tracker that cannot work, now)
    name = args.name or Path(args.plan).stem
    folder = plan.exp_dir / name
    print(f"plan {args.plan}: {len(plan.runs)} run{'s' * (len(plan.runs) > 1)}, sweep folder {folder}")
    if args.dry_run:
        for run in plan.runs:
            waits = f"  (after run{'s' * (len(run.needs) > 1)} {', '.join(run.needs)})" if run.needs else ""
            search = (f"  [search: {run.search['trials']} trials of "
                      f"{', '.join(k for k in run.search if k not in ('trials', 'pruner'))}]"
                      if run.search else "")
            state, why = (None, "") if run.search else plans.state(run)
            # (a conflict says what differs, as the run's failure would)
            now_state = "" if state is None else f"  -> {state}" + (f" ({why})" if state == "conflict" else "")
            print(f"{run.number:>4}. {run.command()}{waits}{search}{now_state}")
        print("every run's flags are valid (nothing was started)")
        return
    if args.executor == "local":
        executor = LocalExecutor(args.gpus, args.cpus)
    else:
        executor = SubmititExecutor(folder, "slurm" if args.executor == "slurm" else "local", args)
    with tracking(plan, name, folder) as outcome:  # (--report_to: the runs grouped by sweep)
        failed = execute(plan, executor, folder, name, args)
        outcome["failed"] = bool(failed)
    if failed:  # (exit 1: runs failed; 2 is for a plan refused before anything ran)
        trials = " (a failed search trial is asked again with the same values)" \
            if any(".t" in o.run.number for o in failed) else ""
        print(f"error: {len(failed)} run{'s' * (len(failed) > 1)} failed (see above; "
              f"{folder / 'runs.csv'}): fix them and run the same command again{trials}",
              file=sys.stderr)
        sys.exit(1)


def execute(plan, executor, folder: Path, name: str, args) -> list:
    """Run the plan to its end (or Ctrl-C), then its table and report; the failed runs."""
    started = time.time()
    runner = Sweep(plan, executor, folder, args.poll)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    finished = False
    try:
        runner.execute()
        finished = True
    except KeyboardInterrupt:
        raise Interrupted("sweep interrupted: the same command continues it (finished runs are "
                          "skipped, stopped ones resumed)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not finished:  # (whatever stopped the sweep: no run is left unwatched)
            for launch in list(runner.active):
                executor.stop(launch)
    return conclude(runner, name, folder, started, args.baseline or plan.baseline)


def main() -> None:
    run_cli(sweep, build_parser().parse_args())
