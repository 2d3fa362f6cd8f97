"""Shared fixtures: a small MNLI-layout data set and a tiny BERT, made locally (no network)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The tests are offline: a hub name fails at once instead of after the hub's retries
# (every script the tests start inherits this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Every test process, and every script it starts, computes on one thread: `make test` runs
# three pytest-xdist workers on two cores (two threads per worker would oversubscribe the
# cores, which slows torch several times), and scripts forked from a test (tests/forked.py)
# can only run on one. Without xdist too, so that a test and the processes it compares
# against reduce in the same order (bitwise-equal resumes depend on it).
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402
torch.set_num_threads(1)

from fine_tune.demo_data import demo_texts, write_demo_mnli, write_tiny_bert  # noqa: E402

SIZES = {"train": 320, "dev_matched": 60, "dev_mismatched": 60,
         "test_matched": 40, "test_mismatched": 50}


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """data/fine_tune/MNLI/*.tsv and a tiny pre-trained-format BERT folder, built once."""
    root = tmp_path_factory.mktemp("assets")
    data_dir = root / "data" / "fine_tune"
    write_demo_mnli(data_dir, sizes=SIZES, seed=1)
    bert = write_tiny_bert(root / "tiny-bert", demo_texts(data_dir), hidden_size=32,
                           num_layers=4, num_heads=2, intermediate_size=64,
                           max_position_embeddings=128)
    return root, data_dir, Path(bert)


@pytest.fixture
def workdir(assets, tmp_path):
    """A fresh working folder with the data (and its token cache) and the tiny BERT,
    laid out as in the project root, so the seed commands run unchanged."""
    root, data_dir, bert = assets
    shutil.copytree(data_dir, tmp_path / "data" / "fine_tune")
    os.symlink(bert, tmp_path / "tiny-bert")
    return tmp_path


def run_script(script: str, *flags, cwd, check=True) -> subprocess.CompletedProcess:
    """Run a real entry script of the project, as a user would, and return its exit status,
    stdout and stderr. By default in this process: runpy runs the very script (its
    `__main__`, its flag parsing, its one-line errors and exit status through SystemExit;
    an exception that would escape is printed as the interpreter would, with status 1),
    which spares each call the 5-10 s of importing torch and transformers again. What
    only a new process can show (imports at start-up, signals, torchrun) is tested with
    subprocesses of its own. FINE_TUNE_TEST_SUBPROCESS=1 runs every call in a new process."""
    if os.environ.get("FINE_TUNE_TEST_SUBPROCESS") != "1":
        result = _run_in_process(script, flags, cwd)
        if check and result.returncode != 0:
            raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, flags)], cwd=cwd,
                            capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def _run_in_process(script: str, flags, cwd) -> subprocess.CompletedProcess:
    import contextlib
    import io

    from forked import run_main
    argv, here = [str(ROOT / script), *map(str, flags)], os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = run_main(argv)
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def scores(path):
    """A results_<split>.csv without its speed columns, which differ from run to run."""
    import pandas as pd
    return pd.read_csv(path).drop(columns=["examples_per_s", "device"])


def flags(text: str) -> list[str]:
    """Flags written as in the README's shell commands (backslash line continuations)."""
    return text.replace("\\\n", " ").split()


@pytest.fixture(scope="session")
def deep_bert(assets):
    """A 12-layer tiny BERT, so the seed's layer indices (12 -> 6 layers) apply unchanged."""
    root, data_dir, _ = assets
    return Path(write_tiny_bert(root / "tiny-bert-12", demo_texts(data_dir), hidden_size=32,
                                num_layers=12, num_heads=2, intermediate_size=64,
                                max_position_embeddings=128))


def seed_flags(command: str, **changes) -> list[str]:
    """A README/seed command's flags with some values replaced (None drops the flag)."""
    given = flags(command)
    pairs = dict(zip(given[::2], given[1::2]))
    for name, value in changes.items():
        if value is None:
            pairs.pop(f"--{name}", None)
        else:
            pairs[f"--{name}"] = str(value)
    return [item for pair in pairs.items() for item in pair]


# ---- the order of the files, and `make test-quick` -------------------------------------

# The slowest files first (measured; see docs/tests.md): `make test` hands whole files to
# its workers in this order, so the long ones start at once and the many short ones
# fill in around them, and both workers finish at about the same time. The Slurm tests
# come first: the longest in time, though mostly waiting for the cluster's jobs.
SLOWEST_FIRST = ["test_slurm", "test_gpu_check", "test_sweep", "test_trackers", "test_fast_path", "test_peer_trainer",
                 "test_torchrun", "test_download", "test_trust", "test_report",
                 "test_distillation_e2e", "test_resume", "test_ablations", "test_inference_bench",
                 "test_download_hub", "test_errors", "test_results_store",
                 "test_store_torchrun_gate", "test_compare"]

QUICK = os.environ.get("FINE_TUNE_TEST_QUICK") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a process or trains more than a few steps "
                                       "(left out by make test-quick)")
    config.addinivalue_line("markers", "bench: a benchmark's or the GPU check's dry run, a "
                                       "dozen fresh processes each (make test-bench; CI runs "
                                       "it after make test)")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # (stable: file order kept)


@pytest.fixture(autouse=True)
def _quick_tests_start_no_process(monkeypatch, request):
    """Under make test-quick, a test that is not marked slow and starts a process fails
    and says to mark it, so the quick set stays quick."""
    if not QUICK or request.node.get_closest_marker("slow"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it @pytest.mark.slow")
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)


def pytest_terminal_summary(terminalreporter):
    """Say, at the end, why the Slurm tests did not run (their skip reason names the fix),
    which pytest -q alone would leave unsaid."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "test_slurm" in report.nodeid]
    if skipped:
        reason = str(skipped[0].longrepr[-1]) if isinstance(skipped[0].longrepr, tuple) else ""
        terminalreporter.write_line(f"{len(skipped)} Slurm tests skipped: {reason.removeprefix('Skipped: ')}")
