"""The training log: loss terms, learning rates, gradient norms and the objective's
statistics every --log_step, to tensorboard, train_log.csv, the --report_to trackers and
the terminal (a tqdm bar, or plain lines when stderr is not a terminal), with the
examples/s of the interval."""
import csv
import io
import sys
import time

import torch
from torch.utils.tensorboard import SummaryWriter

from fine_tune.errors import UserError
from fine_tune import distributed
from fine_tune.experiment import Experiment
from fine_tune.progress import interactive, log_line, progress
from fine_tune.results import TRAIN_LOG
from fine_tune.trackers import Trackers


class TrainingLog:
    """Loss terms, learning rates, gradient norms and the objective's statistics (LAD's
    gate values) every --log_step: to tensorboard (log/, opened at the first point, so a
    run that logs nothing leaves no empty event file; points a killed run logged after
    `start` are dropped), to train_log.csv (one row per --log_step, the same tags as
    columns; rows past `start` dropped alike), and to the terminal: a live tqdm bar, or,
    when stderr is not a terminal (nohup, slurm, `> log 2>&1`), one plain line per
    --log_step."""

    def __init__(self, experiment: Experiment, start: int, total_step: int,
                 tensorboard: bool = True, trackers=None):
        self.experiment, self.start, self.total_step = experiment, start, total_step
        self.tensorboard = tensorboard  # --report_to: event files, or none
        self.trackers = trackers if trackers is not None else Trackers(experiment, (), "train")
        self.writer = None
        self.csv_columns = None
        self.interactive = interactive()
        # Updated by hand: a bar that wraps the loop redraws a stale count when only
        # the postfix changes.
        self.bar = progress(initial=start, total=total_step, desc=experiment.name, unit="step")
        self.clock, self.examples = time.perf_counter(), 0

    def step(self, examples: int) -> None:
        self.bar.update()
        self.examples += examples

    def restart_clock(self) -> None:
        self.clock, self.examples = time.perf_counter(), 0

    def note(self, text: str) -> None:
        """A line for the terminal or the log file, without breaking the bar."""
        if self.interactive:
            self.bar.write(text, file=sys.stderr)
        else:
            log_line(text)

    def write(self, step: int, means: dict, groups: list, statistics: dict | None = None) -> None:
        """(Under torchrun rank 0 alone writes: `train` calls it through distributed.agreed.)"""
        if self.writer is None and self.tensorboard:
            self.writer = SummaryWriter(self.experiment.path / "log", purge_step=self.start + 1)
        total = sum(means.values())
        now = time.perf_counter()
        speed = self.examples / max(now - self.clock, 1e-9)
        row = {f"loss/{name}": value for name, value in means.items()} | {"loss/total": total}
        for group in groups:
            row[f"lr/{group.name}"] = group.lr()
            row[f"grad_norm/{group.name}"] = float(group.grad_norm)
        row |= statistics or {}
        if self.writer is not None:
            for tag, value in row.items():
                self.writer.add_scalar(tag, value, step)
        self._append_csv({"step": step} | row | {"examples_per_s": speed})
        self.trackers.log_training(step, row | {"examples_per_s": speed})
        self.restart_clock()  # (the next interval's examples/s counts training alone)
        if self.interactive:
            self.bar.set_postfix(loss=f"{total:.4f}", lr=f"{groups[0].lr():.2e}")
        else:
            terms = "  ".join(f"{name} {value:.4f}" for name, value in means.items())
            lrs = "  ".join(f"lr/{group.name} {group.lr():.2e}" for group in groups)
            log_line(f"{self.experiment.name} step {step}/{self.total_step}  loss {total:.4f}  "
                     f"{terms}  {lrs}  {speed:.1f} examples/s")

    def _append_csv(self, row: dict) -> None:
        path = self.experiment.path / TRAIN_LOG
        try:
            if self.csv_columns is None:  # the first row of this run
                self._start_csv(path, list(row))
            with open(path, "a", newline="") as file:
                csv.DictWriter(file, self.csv_columns, restval="").writerow(row)
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror or error}): free disk space or "
                            f"fix the permissions of {self.experiment.path}") from None

    def _start_csv(self, path, columns: list) -> None:
        """Keep the complete rows up to `start` (a killed run may have logged past its last
        checkpoint, or died mid-line) and rewrite the file with them, atomically."""
        header, kept = None, []
        if path.is_file():
            with open(path, newline="") as file:
                reader = csv.reader(file)
                header = next(reader, None)
                kept = [line for line in reader if header and len(line) == len(header)
                        and line[0].isdigit() and int(line[0]) <= self.start]
        self.csv_columns = (header + [c for c in columns if c not in header]) if kept else columns
        lines = [self.csv_columns] + [line + [""] * (len(self.csv_columns) - len(line)) for line in kept]
        text = io.StringIO()
        csv.writer(text).writerows(lines)
        self.experiment.write_text(TRAIN_LOG, text.getvalue())

    def close(self) -> None:
        self.bar.close()  # before any error message, which would otherwise be glued to it
        if self.writer is not None:
            self.writer.close()


class IntervalSums:
    """The loss terms summed since the last log, and each step's statistics, kept on the
    device (a few numbers a step): nothing is read on the host until `read`."""

    def __init__(self):
        self.sums, self.steps_statistics, self.count = None, [], 0

    def add(self, terms: dict, statistics: dict) -> None:
        values = torch.stack(list(terms.values()))
        self.sums = values if self.sums is None else self.sums + values
        self.steps_statistics.append(statistics)
        self.count += 1
        self.names = list(terms)

    def read(self, objective) -> tuple[dict, dict]:
        """({term: mean over the interval's steps}, the objective's named statistics), and a
        new interval. Each statistic is one tensor of the interval's steps; under torchrun
        it is averaged over the ranks with the losses in one all-reduce, so each row is the
        step's value over the global batch."""
        per_step = {tag: torch.stack([s[tag] for s in self.steps_statistics])
                    for tag in self.steps_statistics[0]}
        averaged = distributed.mean_over_ranks({"terms": self.sums} | per_step)
        means = dict(zip(self.names, (averaged.pop("terms") / self.count).tolist()))
        watched = objective.name_statistics(
            {tag: value.tolist() for tag, value in objective.interval_statistics(averaged).items()})
        self.sums, self.steps_statistics, self.count = None, [], 0
        return means, watched
