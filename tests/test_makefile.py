"""`make` refuses a Python older than the pins need, in one line, before making .venv;
and a .venv that an older Python left is removed so the next `make` builds it anew."""
import shutil
import subprocess

import pytest

from conftest import ROOT

# A stand-in for python3.8: answers the version probes as Python 3.8 would.
OLD_PYTHON = """#!/bin/sh
if [ "$1" = "-c" ]; then
  case "$2" in *platform*) echo 3.8.10;; *) exit 1;; esac
fi
"""


@pytest.fixture
def project(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    old = tmp_path / "python3.8"
    old.write_text(OLD_PYTHON)
    old.chmod(0o755)
    return tmp_path


def make(project, *args):
    return subprocess.run(["make", *args], cwd=project, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_an_old_python_is_refused_before_anything_is_made(project):
    result = make(project, "test", "PYTHON=./python3.8")
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == (
        "error: ./python3.8 is Python 3.8.10; the pinned packages need Python 3.11 or newer: "
        "run make PYTHON=python3.11 (or another python >= 3.11)")
    assert not (project / ".venv").exists()


@pytest.mark.slow
def test_a_venv_left_by_an_old_python_is_removed(project):
    (project / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(project / "python3.8", project / ".venv" / "bin" / "python")
    result = make(project, "python-check", "PYTHON=python3")
    assert result.returncode == 0, result.stderr
    assert ".venv was made by an older or missing Python: removing it" in result.stderr
    assert not (project / ".venv").exists()
