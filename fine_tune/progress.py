"""Progress bars: live in a terminal; none when stderr is a file or a pipe (nohup, slurm,
`> log 2>&1`), where a bar's carriage returns and cursor moves would litter the log.
There, training prints one plain line per --log_step and evaluation one per checkpoint."""
import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    kwargs["disable"] = kwargs.get("disable", False) or not interactive()
    kwargs.setdefault("mininterval", 0.1)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
