"""Progress bars: live in a terminal; none when stderr is a file or a pipe (nohup, slurm,
`> log 2>&1`), where a bar's carriage returns and cursor moves would litter the log.
There, training prints one plain line per --log_step and evaluation one per checkpoint."""
import sys

from tqdm.auto import tqdm

from fine_tune.errors import quiet_process


def interactive() -> bool:
    """Bars and live output: in a terminal, and under torchrun on rank 0 only."""
    return sys.stderr.isatty() and not quiet_process()


def progress(iterable=None, **kwargs):
    kwargs["disable"] = kwargs.get("disable", False) or not interactive()
    kwargs.setdefault("mininterval", 0.1)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def log_line(text: str) -> None:
    """A line for a log file or a terminal, on stderr (under torchrun, rank 0's only)."""
    if not quiet_process():
        print(text, file=sys.stderr, flush=True)
