"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Each write goes to a temporary file in the destination folder, is flushed to disk,
and is renamed over the final name; the rename is atomic on POSIX file systems.
"""
import io
import json
import os
import tempfile
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(data: bytes, path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(text: str, path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj, path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def atomic_torch_save(obj, path) -> None:
    import torch  # (here: readers of results and reports never need torch)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def _fsync_dir(folder) -> None:
    # Makes the rename itself durable; some file systems do not allow it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def first_line(error: Exception) -> str:
    """The first sentence of an error's message (torch's can run to a paragraph). For
    reporting what torch.load raised on a damaged file: almost anything, since a junk byte
    is an arbitrary unpickling opcode, so callers catch Exception around torch.load alone."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text.split(". ")[0].rstrip(".")
