"""The report's plots (`python -m fine_tune.report --plots`), from the experiments' own files:

    plots/<task>_<split>_<metric>.png   the metric against step, one line per experiment
                                        (results_<split>.csv; fp32 where a
                                        step also has a bf16 row)
    plots/<experiment>_loss.png         the training loss terms against step (train_log.csv)
    plots/<experiment>_gates.png        LAD's gates: each gate's mean z against step
                                        (train_log.csv's gate_z/H_i columns) and, below,
                                        the standard deviation of its z (gate_z_std/H_i;
                                        logs written before it existed: the mean alone)

Each PNG is written whole or not at all.
"""
import io
from pathlib import Path

import pandas as pd

from fine_tune.errors import UserError
from fine_tune.glue import get_task
from fine_tune.io import atomic_write_bytes
from fine_tune.results import TRAIN_LOG, dev_split, preferred_rows, read_results


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plots needs matplotlib, which is in requirements.txt: run "
                        "pip install -r requirements.txt") from None
    matplotlib.use("Agg")  # files only: no display needed (ssh, slurm)
    import matplotlib.pyplot as plt
    return plt


def _save(plt, figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(buffer.getvalue(), path)
    return path


def _curves(plt, title: str, ylabel: str, lines: dict, log_scale=False):
    """A figure with one line per entry of `lines` ({label: (steps, values)})."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, (steps, values) in lines.items():
        axis.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3,
                  label=label)
    axis.set(title=title, xlabel="step", ylabel=ylabel)
    if log_scale:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="best", ncol=1 + (len(lines) > 8))
    return figure


def write_plots(folder: Path, exp_dir: Path, table: pd.DataFrame, select_on: str | None) -> list[Path]:
    """Every plot for the report's rows (`table`: one row per experiment, as printed),
    into `folder`."""
    plt = _pyplot()
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {folder} ({error.strerror}): fix the permissions of "
                        f"{exp_dir}") from None
    written = []
    for task_name, rows in table.groupby("task", sort=True):
        task = get_task(task_name)
        split, metric = select_on or dev_split(task), task.metrics[0]
        lines = {}
        for name in rows["experiment"]:
            results = read_results(exp_dir / name, split)
            if results is not None and metric in results.columns:
                results = preferred_rows(results)  # one point per step: fp32 where there is one
                lines[name] = (results["step"], results[metric])
        if lines:
            figure = _curves(plt, f"{task_name}: {split} {metric} of each checkpoint", metric, lines)
            written.append(_save(plt, figure, folder / f"{task_name}_{split}_{metric}.png"))
    for name in table["experiment"]:
        path = exp_dir / name / TRAIN_LOG
        if not path.is_file():
            continue  # trained before train_log.csv was written (tensorboard has its losses)
        log = pd.read_csv(path)
        losses = [c for c in log.columns if c.startswith("loss/")]
        if losses:
            positive = bool((log[losses] > 0).all().all())
            figure = _curves(plt, f"{name}: training loss terms (mean over each --log_step)",
                             "loss" + (" (log scale)" if positive else ""),
                             {c[len("loss/"):]: (log["step"], log[c]) for c in losses},
                             log_scale=positive)
            written.append(_save(plt, figure, folder / f"{name}_loss.png"))
        gates = [c[len("gate_z/"):] for c in log.columns if c.startswith("gate_z/")]
        if gates:
            written.append(_save(plt, _gate_figure(plt, name, log, gates),
                                 folder / f"{name}_gates.png"))
    return written


def _gate_figure(plt, name: str, log: pd.DataFrame, gates: list):
    """Each gate's mean z against step and, in a panel below, the standard deviation of
    its z (over batch, tokens and width, averaged over each --log_step) where
    train_log.csv has it: a mean near 0.5 with a std near 0 is a gate that mixes evenly,
    with a large std one that passes some units and blocks others."""
    title = f"{name}: mean gate value z per teacher layer H_i (z near 1: the aggregate takes H_i)"
    spread = [gate for gate in gates if f"gate_z_std/{gate}" in log.columns]
    if not spread:
        figure = _curves(plt, title, "mean z", {g: (log["step"], log[f"gate_z/{g}"]) for g in gates})
        figure.axes[0].set_ylim(0, 1)
        return figure
    marker = "o" if len(log) < 30 else None
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.4), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    for gate in gates:
        line, = top.plot(log["step"], log[f"gate_z/{gate}"], marker=marker, markersize=3, label=gate)
        if gate in spread:
            bottom.plot(log["step"], log[f"gate_z_std/{gate}"], marker=marker, markersize=3,
                        color=line.get_color(), label=gate)
    top.set(title=title, ylabel="mean z", ylim=(0, 1))
    # From 0 (every unit mixes alike) up to the data: small spreads stay readable (z lies
    # in (0, 1), so its std is at most 0.5).
    bottom.set(xlabel="step", ylabel="std of z",
               title="spread of z over batch, tokens and width (near 0: every unit mixes alike)")
    bottom.set_ylim(bottom=0)
    bottom.title.set_fontsize("small")
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    top.legend(fontsize="small", loc="best", ncol=1 + (len(gates) > 8))
    return figure
