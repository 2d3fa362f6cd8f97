"""The end of a sweep: the table of what ran, was skipped or failed (printed, and
<exp_dir>/<sweep>/runs.csv), the last lines of each failed run's log, and the report of
the sweep's experiments (fine_tune.report) in <exp_dir>/<sweep>/report.md.

pandas and fine_tune.report are imported here when the sweep ends, not before.
"""
import time
from pathlib import Path

import fine_tune.sweep.plan as plans
from fine_tune.errors import UserError
from fine_tune.settings import Settings
from fine_tune.sweep.runs import Outcome, duration, tail
from fine_tune.sweep.scheduler import Sweep


def table(runner: Sweep):
    """One row per run of the plan (per trial of a search), with its status and time."""
    import pandas as pd
    rows = []
    for run in runner.plan.runs:
        outcomes = [o for n, o in runner.outcomes.items() if n == run.number or n.startswith(f"{run.number}.")]
        for outcome in outcomes or [Outcome(run, "not run")]:
            rows.append({"run": outcome.run.number, "script": outcome.run.script,
                         "task": outcome.run.settings.get("task", ""),
                         "experiment": outcome.run.experiment, "status": outcome.status,
                         "time": duration(outcome.seconds) if outcome.seconds else "",
                         "note": outcome.note[:100]})
    return pd.DataFrame(rows)


def conclude(runner: Sweep, name: str, folder: Path, started: float,
             baseline: str | None) -> list[Outcome]:
    """Print the table, write runs.csv, show what failed and write the report; the runs
    that failed (or conflicted)."""
    plan = runner.plan
    runs = table(runner)
    print(f"\nsweep {name}: {len(plan.runs)} runs in {duration(time.time() - started)}")
    print(runs.to_string(index=False))
    folder.mkdir(parents=True, exist_ok=True)
    from fine_tune.io import atomic_write_text
    atomic_write_text(runs.to_csv(index=False), folder / "runs.csv")
    failed = [o for o in runner.outcomes.values() if o.status in ("failed", "conflict")]
    for outcome in failed:
        if outcome.log:
            print(f"\n{outcome.run.label} failed; the last lines of {outcome.log}:")
            print("\n".join("    " + line for line in tail(outcome.log)))
        else:
            print(f"\n{outcome.run.label} {outcome.status}: {outcome.note}")
    write_report(plan, runner, folder, baseline)
    return failed


def write_report(plan: plans.Plan, runner: Sweep, folder: Path, baseline: str | None) -> None:
    """The report of the sweep's experiments (fine_tune.report), into the sweep's folder."""
    from fine_tune.report import report
    names = sorted({o.run.folder().name for o in runner.outcomes.values() if o.run.kind == "train"})
    names = [name for name in names if (plan.exp_dir / name / "config.json").is_file()]
    if not names:
        return
    print()
    if baseline and baseline not in names and baseline not in {name.rsplit("_", 2)[0] for name in names}:
        # (a baseline run that failed before its config.json, or one from outside the plan)
        print(f"note: [sweep] baseline {baseline} is not among the sweep's experiments with a "
              "config.json: the report has no columns of differences from it")
        baseline = None
    try:
        report(Settings(exp_dir=str(plan.exp_dir), task=None, filter=None, select_on=None,
                        baseline=baseline, resamples=10000, plots=plan.plots,
                        folders=names, output_dir=str(folder)))
    except UserError as error:  # (e.g. nothing evaluated yet): the runs themselves are fine
        print(f"no report: {error}")
