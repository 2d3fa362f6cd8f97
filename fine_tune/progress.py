"""Progress bars: live in a terminal, sparse in a log file (stderr redirected), where
every redraw would otherwise add a line."""
import sys

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else 60.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
