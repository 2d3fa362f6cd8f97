"""`python -m fine_tune.download --source hub|auto`: GLUE from a folder laid out as the
Hugging Face hub's nyu-mll/glue, and from a hub cache with HF_HUB_OFFLINE.

The hub-layout parquet files are built here from GLUE-layout fixtures with what the hub's
dataset card publishes (its column names, class-id order and split names), independently
of the task table's hub entries, so a wrong entry there makes the texts, labels or indices
differ from what the GLUE-layout fixture yields.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, flags, run_script
from fine_tune.data import read_split
from fine_tune.glue import TASKS, get_task
from glue_data import write_task

# nyu-mll/glue as its card describes it: config, text columns, class names by id, and the
# hub's name of each of our splits.
NLI = ["entailment", "neutral", "contradiction"]
STANDARD = {"train": "train", "dev": "validation", "test": "test"}
HUB = {
    "mnli": ("mnli", ["premise", "hypothesis"], NLI,
             {"train": "train", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched", "test_matched": "test_matched",
              "test_mismatched": "test_mismatched"}),
    "ax": ("ax", ["premise", "hypothesis"], NLI, {"test": "test"}),
    "qnli": ("qnli", ["question", "sentence"], ["entailment", "not_entailment"], STANDARD),
    "qqp": ("qqp", ["question1", "question2"], ["not_duplicate", "duplicate"], STANDARD),
    "sst2": ("sst2", ["sentence"], ["negative", "positive"], STANDARD),
    "mrpc": ("mrpc", ["sentence1", "sentence2"], ["not_equivalent", "equivalent"], STANDARD),
    "rte": ("rte", ["sentence1", "sentence2"], ["entailment", "not_entailment"], STANDARD),
    "cola": ("cola", ["sentence"], ["unacceptable", "acceptable"], STANDARD),
    "stsb": ("stsb", ["sentence1", "sentence2"], None, STANDARD),
    "wnli": ("wnli", ["sentence1", "sentence2"], ["not_entailment", "entailment"], STANDARD),
}


def hub_class_id(glue_label: str, names: list) -> int:
    """GLUE's files write binary labels as 0/1 with 1 the positive class (acceptable,
    positive, equivalent, duplicate, entailment for WNLI): the hub's id of the same name."""
    return int(glue_label) if glue_label in ("0", "1") else names.index(glue_label)


def glue_rows(path: Path, header: bool) -> list:
    lines = path.read_text(encoding="utf-8-sig").rstrip("\n").split("\n")
    return [line.split("\t") for line in lines[1 if header else 0:]]


def write_hub_copy(glue_dir: Path, hub_dir: Path, name: str, metadata: bool = True,
                   shards: int = 1) -> None:
    """hub_dir/<config>/<split>-0000k-of-0000n.parquet from the task's GLUE-layout fixture."""
    task = get_task(name)
    config, text_columns, names, splits = HUB[name]
    for split, (file_name, layout) in task.files.items():
        rows = glue_rows(glue_dir / task.folder / file_name, layout.header is not None)
        columns = {column: [row[i] for row in rows] for column, i in zip(text_columns, layout.text)}
        if layout.label is None:
            labels = [-1] * len(rows) if names else [-1.0] * len(rows)
        elif names is None:
            labels = [float(np.float32(row[layout.label])) for row in rows]
        else:
            labels = [hub_class_id(row[layout.label], names) for row in rows]
        columns["label"] = pa.array(labels, pa.float32() if names is None else pa.int64())
        columns["idx"] = pa.array([int(row[layout.index]) if layout.index is not None else i
                                   for i, row in enumerate(rows)], pa.int32())
        table = pa.table(columns)
        if metadata:
            label = ({"dtype": "float32", "_type": "Value"} if names is None
                     else {"names": names, "_type": "ClassLabel"})
            features = {column: {"dtype": "string", "_type": "Value"} for column in text_columns}
            features.update(label=label, idx={"dtype": "int32", "_type": "Value"})
            table = table.replace_schema_metadata(
                {"huggingface": json.dumps({"info": {"features": features}})})
        folder = hub_dir / config
        folder.mkdir(parents=True, exist_ok=True)
        bounds = np.linspace(0, len(rows), shards + 1).astype(int)
        for k in range(shards):
            pq.write_table(table.slice(bounds[k], bounds[k + 1] - bounds[k]),
                           folder / f"{splits[split]}-{k:05d}-of-{shards:05d}.parquet")


def rows_flag(name: str, rows: int) -> str:
    return ",".join(f"{split}={rows}" for split in get_task(name).files)


def download(data_dir: Path, name: str, rows: int, *extra, check=True):
    return run_script("fine_tune/download.py", "--task", name, "--data_dir", data_dir,
                      "--expected_rows", rows_flag(name, rows), *extra, cwd=ROOT, check=check)


def assert_one_error_line(result, *phrases):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.parametrize("name", TASKS)
def test_a_hub_copy_reads_as_the_glue_files_do(tmp_path, name):
    glue_dir, hub_dir, data_dir = tmp_path / "glue", tmp_path / "hub", tmp_path / "data"
    write_task(glue_dir, name, rows=9, seed=3)
    write_hub_copy(glue_dir, hub_dir, name, shards=2)
    result = download(data_dir, name, 9, "--source", "hub", "--hub_repo", hub_dir)
    task = get_task(name)
    assert f"{task.folder} is ready" in result.stdout and f"from the folder {hub_dir}" in result.stdout
    assert sorted(p.name for p in data_dir.iterdir()) == [task.folder]  # no temporary folder
    for split in task.files:
        expected, got = read_split(glue_dir, name, split), read_split(data_dir, name, split)
        assert got.index == expected.index
        assert got.premise == expected.premise and got.hypothesis == expected.hypothesis
        if expected.labels is None:
            assert got.labels is None
        else:
            assert got.labels.dtype == expected.labels.dtype
            assert np.array_equal(got.labels, expected.labels), split
    record = json.loads((data_dir / task.folder / "hub_source.json").read_text())
    assert record == {"source": "hub", "repo": str(hub_dir), "revision": None, "commit": None}


def test_class_names_come_from_the_dataset_card_when_the_schema_has_none(tmp_path):
    glue_dir, hub_dir = tmp_path / "glue", tmp_path / "hub"
    write_task(glue_dir, "mnli", rows=6)
    write_hub_copy(glue_dir, hub_dir, "mnli", metadata=False)
    # Without class names anywhere the ids are not guessed by position.
    result = download(tmp_path / "data", "mnli", 6, "--source", "hub", "--hub_repo", hub_dir,
                      check=False)
    assert_one_error_line(result, "mnli/train publishes no class names for label")
    assert not (tmp_path / "data").exists()
    # The card's YAML as nyu-mll/glue writes it, with another config listed first.
    (hub_dir / "README.md").write_text(
        "---\ndataset_info:\n- config_name: ax\n  features:\n  - name: label\n    dtype:\n"
        "      class_label:\n        names:\n          '0': contradiction\n          '1': neutral\n"
        "          '2': entailment\n- config_name: mnli\n  features:\n  - name: premise\n"
        "    dtype: string\n  - name: label\n    dtype:\n      class_label:\n        names:\n"
        "          '0': entailment\n          '1': neutral\n          '2': contradiction\n"
        "  - name: idx\n    dtype: int32\n---\n# GLUE\n")
    download(tmp_path / "data", "mnli", 6, "--source", "hub", "--hub_repo", hub_dir)
    expected, got = read_split(glue_dir, "mnli", "dev_matched"), read_split(tmp_path / "data", "mnli", "dev_matched")
    assert np.array_equal(got.labels, expected.labels)


def test_unknown_class_names_and_labels_out_of_range_are_refused(tmp_path):
    glue_dir, hub_dir = tmp_path / "glue", tmp_path / "hub"
    write_task(glue_dir, "rte", rows=4)
    write_hub_copy(glue_dir, hub_dir, "rte")
    path = hub_dir / "rte" / "validation-00000-of-00001.parquet"
    table = pq.read_table(path)
    features = json.loads(table.schema.metadata[b"huggingface"])
    features["info"]["features"]["label"]["names"] = ["yes", "no"]
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps(features)}), path)
    result = download(tmp_path / "data", "rte", 4, "--source", "hub", "--hub_repo", hub_dir,
                      check=False)
    assert_one_error_line(result, "rte/validation names its classes ['yes', 'no']",
                          "expected the names ['entailment', 'not_entailment']", "--hub_repo")
    write_hub_copy(glue_dir, hub_dir, "rte")
    labels = table.column("label").to_pylist()
    labels[1] = -1
    pq.write_table(table.set_column(table.column_names.index("label"), "label",
                                    pa.array(labels, pa.int64())), path)
    result = download(tmp_path / "data", "rte", 4, "--source", "hub", "--hub_repo", hub_dir,
                      check=False)
    assert_one_error_line(result, "rte/validation row 1 has label -1 in a labelled split")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("damage, message", [
    ("missing", "has no mnli/validation_mismatched-*.parquet"),
    ("truncated", "mnli/train-00000-of-00001.parquet is not a readable parquet file"),
    ("columns", "without hypothesis"),
    ("rows", "test_matched.tsv has 5 rows, expected 6"),
])
def test_a_broken_hub_copy_is_one_line_and_leaves_nothing(tmp_path, damage, message):
    glue_dir, hub_dir, data_dir = tmp_path / "glue", tmp_path / "hub", tmp_path / "data"
    write_task(glue_dir, "mnli", rows=6)
    write_hub_copy(glue_dir, hub_dir, "mnli")
    if damage == "missing":
        (hub_dir / "mnli" / "validation_mismatched-00000-of-00001.parquet").unlink()
    elif damage == "truncated":
        path = hub_dir / "mnli" / "train-00000-of-00001.parquet"
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "columns":
        path = hub_dir / "mnli" / "validation_matched-00000-of-00001.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["hypothesis"]), path)
    else:
        path = hub_dir / "mnli" / "test_matched-00000-of-00001.parquet"
        pq.write_table(pq.read_table(path).slice(0, 5), path)
    result = download(data_dir, "mnli", 6, "--source", "hub", "--hub_repo", hub_dir, check=False)
    assert_one_error_line(result, message)
    assert not data_dir.exists()


def test_flag_mistakes_are_one_line(tmp_path):
    result = download(tmp_path / "d", "rte", 4, "--source", "hub", "--url", "file:///x.zip",
                      check=False)
    assert_one_error_line(result, "--url names a copy of GLUE's own files", "--hub_repo")
    result = download(tmp_path / "d", "rte", 4, "--revision", "v1", check=False)
    assert_one_error_line(result, "--hub_repo and --revision apply to the hub", "--source hub")
    result = download(tmp_path / "d", "rte", 4, "--source", "hub", "--hub_repo", tmp_path,
                      "--revision", "v1", check=False)
    assert_one_error_line(result, "--revision v1 applies to a hub repository, not to the local folder")
    result = download(tmp_path / "d", "rte", 4, "--source", "hub", "--hub_repo",
                      tmp_path / "no" / "such", check=False)
    assert_one_error_line(result, "is not a folder")
    assert not (tmp_path / "d").exists()


def test_auto_falls_back_to_the_hub_and_says_so(tmp_path):
    glue_dir, hub_dir, data_dir = tmp_path / "glue", tmp_path / "hub", tmp_path / "data"
    write_task(glue_dir, "rte", rows=5)
    write_hub_copy(glue_dir, hub_dir, "rte")
    dead = (tmp_path / "gone.zip").as_uri()
    result = download(data_dir, "rte", 5, "--source", "auto", "--url", dead, "--hub_repo", hub_dir)
    assert f"downloading {dead}" in result.stdout and "trying the next source" in result.stdout
    assert f"RTE is ready in {data_dir / 'RTE'} (train 5 rows, dev 5 rows, test 5 rows), " \
           f"from the folder {hub_dir}" in result.stdout
    assert read_split(data_dir, "rte", "dev").premise == read_split(glue_dir, "rte", "dev").premise
    # Both failing: one line with both reasons.
    result = download(tmp_path / "d2", "rte", 5, "--source", "auto", "--url", dead, "--hub_repo",
                      tmp_path / "glue", check=False)
    assert_one_error_line(result, "could not download", "and then:", "has no rte/train-*.parquet")


def fake_hub_cache(cache: Path, hub_dir: Path, commit: str) -> None:
    """huggingface_hub's cache layout for the dataset nyu-mll/glue at `commit` (main)."""
    repo = cache / "datasets--nyu-mll--glue"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.parent.mkdir()
    shutil.copytree(hub_dir, snapshot)


def run_module(data_dir: Path, env: dict, *args):
    return subprocess.run([sys.executable, "-m", "fine_tune.download", "--data_dir", str(data_dir),
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.slow
def test_offline_the_hub_cache_is_used_and_its_absence_is_one_line(tmp_path):
    glue_dir, hub_dir, cache = tmp_path / "glue", tmp_path / "hub", tmp_path / "cache"
    write_task(glue_dir, "wnli", rows=5)
    write_hub_copy(glue_dir, hub_dir, "wnli")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    rows = ("--expected_rows", rows_flag("wnli", 5))
    result = run_module(tmp_path / "data", env, "--task", "wnli", "--source", "hub", *rows)
    assert_one_error_line(result, "HF_HUB_OFFLINE is set and nyu-mll/glue is not in the hub cache")
    assert not (tmp_path / "data").exists()
    commit = "0123456789abcdef0123456789abcdef01234567"
    fake_hub_cache(cache, hub_dir, commit)
    result = run_module(tmp_path / "data", env, "--task", "wnli", "--source", "hub", *rows)
    assert result.returncode == 0, result.stderr
    assert f"from nyu-mll/glue at commit {commit}" in result.stdout
    assert read_split(tmp_path / "data", "wnli", "train").labels.tolist() == \
        read_split(glue_dir, "wnli", "train").labels.tolist()
    record = json.loads((tmp_path / "data" / "WNLI" / "hub_source.json").read_text())
    assert record["commit"] == commit and record["repo"] == "nyu-mll/glue"
    result = run_module(tmp_path / "data2", env, "--task", "wnli", "--source", "hub",
                        "--revision", "v0.9", *rows)
    assert_one_error_line(result, "nyu-mll/glue at revision v0.9 is not in the hub cache")


class ReadError(Exception):
    """As huggingface_hub's HTTP library raises a dropped connection: not an OSError."""


@pytest.mark.parametrize("raised, message", [
    ("revision", "nyu-mll/glue has no revision 'nope' on the hub: pass --revision of an existing"),
    ("repository", "no dataset repository nyu-mll/glue on the hub"),
    ("network", "could not reach the hub for nyu-mll/glue at revision nope"),
    ("partial", "download of nyu-mll/glue at revision nope from the hub failed (ReadError: peer "
                "closed connection); try again"),
])
def test_hub_failures_are_one_line_and_leave_nothing(tmp_path, monkeypatch, raised, message):
    import huggingface_hub
    from huggingface_hub import errors

    def snapshot_download(*args, **kwargs):
        # what huggingface_hub's HTTP errors read of the hub's answer
        response = SimpleNamespace(headers={}, request=None, status_code=404)
        raise {"revision": lambda: errors.RevisionNotFoundError("404 Revision", response=response),
               "repository": lambda: errors.RepositoryNotFoundError("404 Repo", response=response),
               "network": lambda: errors.LocalEntryNotFoundError("cannot find the files"),
               "partial": lambda: ReadError("peer closed connection\nmore")}[raised]()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result = download(tmp_path / "data", "rte", 4, "--source", "hub", "--revision", "nope",
                      check=False)
    assert_one_error_line(result, message)
    assert not (tmp_path / "data").exists()


TEACHER = ("--experiment teacher --model bert --ptrain_ver tiny-bert --dataset train "
           "--batch_size 8 --ckpt_step 2 --log_step 2 --lr 1e-3 --max_seq_len 32 --device_id -1 "
           "--total_step 2 --warmup_step 0")


def test_submissions_after_a_hub_download_equal_those_after_a_glue_download(workdir):
    """Byte for byte, for MNLI's two test sets and AX, QQP (its id column) and STS-B (scores)."""
    data_dir, hub_dir = workdir / "data" / "fine_tune", workdir / "hub"
    rows = 16
    for name in ("mnli", "ax", "qqp", "stsb"):
        write_task(data_dir, name, rows=rows, seed=7)
        write_hub_copy(data_dir, hub_dir, name)
    predictions = {("mnli", "test_matched"): "MNLI-m.tsv", ("mnli", "test_mismatched"): "MNLI-mm.tsv",
                   ("ax", "test"): "AX.tsv", ("qqp", "test"): "QQP.tsv", ("stsb", "test"): "STS-B.tsv"}
    for name in ("mnli", "qqp", "stsb"):
        run_script("run_fine_tune.py", *flags(TEACHER), "--task", name, cwd=workdir)

    def predict() -> dict:
        written = {}
        for (name, split), file_name in predictions.items():
            trained = get_task(name).trained_as
            run_script("generate_test_prediction.py", *flags(
                f"--experiment teacher --task {name} --dataset {split} --ckpt 2 --device_id -1"),
                cwd=workdir)
            written[file_name] = (workdir / "exp" / f"teacher_bert_{trained}" / "predictions" / "2"
                                  / file_name).read_bytes()
        return written

    from_glue = predict()
    for name in ("mnli", "ax", "qqp", "stsb"):
        download(data_dir, name, rows, "--source", "hub", "--hub_repo", hub_dir, "--force")
    assert (data_dir / "MNLI" / "hub_source.json").is_file()
    from_hub = predict()
    assert from_hub == from_glue
    assert len(from_glue["QQP.tsv"].splitlines()) == rows + 1


def test_every_task_of_one_run_comes_from_the_first_tasks_commit(tmp_path, monkeypatch):
    import huggingface_hub
    from fine_tune.download import Hub
    glue_dir = tmp_path / "glue"
    commit = "89abcdef" * 5
    for name in ("rte", "wnli"):
        write_task(glue_dir, name, rows=3)
        write_hub_copy(glue_dir, tmp_path / "snapshots" / commit, name)
    asked = []

    def snapshot_download(repo_id, **kwargs):
        asked.append(kwargs["revision"])
        return str(tmp_path / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    hub = Hub()
    for number, name in enumerate(("rte", "wnli")):
        (tmp_path / str(number)).mkdir()
        folder, described = hub.fetch(get_task(name), tmp_path / str(number))
        assert described == f"nyu-mll/glue at commit {commit}"
    assert asked == [None, commit]  # main resolved once, then pinned


def one_shard(hub_dir: Path, config: str, split: str) -> Path:
    return hub_dir / config / f"{split}-00000-of-00001.parquet"


@pytest.mark.parametrize("damage, message", [
    ("shard", "rte/train-00001-of-00002.parquet has columns ['sentence1', 'label', 'idx'], "
              "without sentence2"),
    ("labels as text", "rte/validation-00000-of-00001.parquet: label is string, expected texts as "
                       "strings, idx as integers and label as class ids"),
    ("null idx", "rte/test row 2 has no idx"),
    ("repeated idx", "rte/test repeats idx values"),
    ("card with a gap", "rte/train publishes no class names for label"),
])
def test_malformed_hub_rows_are_one_line(tmp_path, damage, message):
    glue_dir, hub_dir = tmp_path / "glue", tmp_path / "hub"
    write_task(glue_dir, "rte", rows=6)
    write_hub_copy(glue_dir, hub_dir, "rte", shards=2 if damage == "shard" else 1,
                   metadata=damage != "card with a gap")
    if damage == "shard":
        path = hub_dir / "rte" / "train-00001-of-00002.parquet"
        pq.write_table(pq.read_table(path).drop_columns(["sentence2"]), path)
    elif damage == "labels as text":
        path = one_shard(hub_dir, "rte", "validation")
        table = pq.read_table(path)
        labels = pa.array([str(v) for v in table.column("label").to_pylist()])
        pq.write_table(table.set_column(table.column_names.index("label"), "label", labels), path)
    elif damage in ("null idx", "repeated idx"):
        path = one_shard(hub_dir, "rte", "test")
        table = pq.read_table(path)
        idx = table.column("idx").to_pylist()
        idx[2] = None if damage == "null idx" else idx[1]
        pq.write_table(table.set_column(table.column_names.index("idx"), "idx",
                                        pa.array(idx, pa.int32())), path)
    else:  # class ids 0 and 2: no name may be guessed for id 1
        (hub_dir / "README.md").write_text(
            "---\ndataset_info:\n- config_name: rte\n  features:\n  - name: label\n    dtype:\n"
            "      class_label:\n        names:\n          '0': entailment\n"
            "          '2': not_entailment\n---\n")
    result = download(tmp_path / "data", "rte", 6, "--source", "hub", "--hub_repo", hub_dir,
                      check=False)
    assert_one_error_line(result, message, "fix the folder")
    assert not (tmp_path / "data").exists()


def test_a_non_finite_score_is_refused(tmp_path):
    glue_dir, hub_dir = tmp_path / "glue", tmp_path / "hub"
    write_task(glue_dir, "stsb", rows=4)
    write_hub_copy(glue_dir, hub_dir, "stsb")
    path = one_shard(hub_dir, "stsb", "train")
    table = pq.read_table(path)
    scores = table.column("label").to_pylist()
    scores[3] = float("nan")
    pq.write_table(table.set_column(table.column_names.index("label"), "label",
                                    pa.array(scores, pa.float32())), path)
    result = download(tmp_path / "data", "stsb", 4, "--source", "hub", "--hub_repo", hub_dir,
                      check=False)
    assert_one_error_line(result, "stsb/train row 3 has score nan in a labelled split")


def test_auto_moves_on_when_glues_mrpc_address_serves_a_web_page(tmp_path):
    glue_dir, hub_dir, www = tmp_path / "glue", tmp_path / "hub", tmp_path / "www"
    write_task(glue_dir, "mrpc", rows=5)
    write_hub_copy(glue_dir, hub_dir, "mrpc")
    www.mkdir()
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv"):
        (www / name).write_text("<html>\n<body>Access denied</body>\n</html>\n")
    result = download(tmp_path / "data", "mrpc", 5, "--source", "auto", "--url",
                      www.as_uri() + "/", "--hub_repo", hub_dir)
    assert "is not the MSR paraphrase file" in result.stdout and "trying the next source" in result.stdout
    assert f"from the folder {hub_dir}" in result.stdout


@pytest.mark.parametrize("name", ["rte", "stsb"])
def test_shards_whose_column_types_differ_but_are_each_accepted_read_as_one(tmp_path, name):
    """idx int32 in one shard and int64 in the other (texts string and large_string, STS-B's
    scores float32 and float64): the same rows as a copy whose shards agree."""
    glue_dir, hub_dir, data_dir = tmp_path / "glue", tmp_path / "hub", tmp_path / "data"
    write_task(glue_dir, name, rows=8, seed=5)
    write_hub_copy(glue_dir, hub_dir, name, shards=2)
    path = next((hub_dir / HUB[name][0]).glob("train-00001-of-00002.parquet"))
    table = pq.read_table(path)
    widened = {"idx": pa.int64(), "label": pa.float64() if name == "stsb" else pa.int32(),
               **{column: pa.large_string() for column in HUB[name][1]}}
    for column, kind in widened.items():
        table = table.set_column(table.column_names.index(column), column,
                                 table.column(column).cast(kind))
    pq.write_table(table, path)
    download(data_dir, name, 8, "--source", "hub", "--hub_repo", hub_dir)
    for split in get_task(name).files:
        expected, got = read_split(glue_dir, name, split), read_split(data_dir, name, split)
        assert got.index == expected.index and got.premise == expected.premise
        if expected.labels is not None:
            assert np.array_equal(got.labels, expected.labels), split
