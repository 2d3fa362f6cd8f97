"""`python -m fine_tune.download` against small MNLI-shaped zips served on loopback.

No network: a ThreadingHTTPServer on 127.0.0.1 serves the zips, and the real command
runs in a subprocess so exit codes, stderr and leftovers are what a user would see.
"""
import functools
import http.server
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from fine_tune.data import COLUMNS, SPLITS, layout_of, read_split
from fine_tune.download import build_parser, main
from fine_tune.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = {"train": 4, "dev_matched": 3, "dev_mismatched": 3, "test_matched": 2, "test_mismatched": 2}
QUOTED = "He said \"hi\" and didn't stop"


def expected_rows_flag(rows: dict) -> str:
    return ",".join(f"{split}={count}" for split, count in rows.items())


def split_text(split: str, rows: int) -> str:
    """A GLUE-layout file: header, then `rows` tab-separated rows with quote characters."""
    columns = COLUMNS[layout_of(split)]
    lines = ["\t".join(columns)]
    for i in range(rows):
        fields = {name: f"{name}-{i}" for name in columns}
        fields.update(index=str(i), sentence1=f"{QUOTED} ({split} {i})",
                      sentence2=f"'quoted' hypothesis {i}")
        if "gold_label" in fields:
            fields["gold_label"] = ("entailment", "neutral", "contradiction")[i % 3]
        lines.append("\t".join(fields[name] for name in columns))
    return "\n".join(lines) + "\n"


def make_zip(path: Path, rows: dict = ROWS, members: dict | None = None) -> dict:
    """Write an MNLI.zip like GLUE's; returns {member name: text} of what it holds."""
    contents = {f"MNLI/{split}.tsv": split_text(split, count) for split, count in rows.items()}
    contents["MNLI/README.txt"] = "MultiNLI, GLUE version\n"
    contents["MNLI/original/multinli_1.0_train.txt"] = "original release\n"
    contents.update(members or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in contents.items():
            archive.writestr(name, text)
    return contents


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; `.url(name)` and `.requests` (paths asked for)."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    class Server:
        root = www
        def url(self, name):
            return f"http://127.0.0.1:{httpd.server_address[1]}/{name}"
    served = Server()
    served.requests = requests
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def run_download(data_dir: Path, url: str, rows: dict = ROWS, *extra: str):
    return subprocess.run(
        [sys.executable, "-m", "fine_tune.download", "--data_dir", str(data_dir),
         "--url", url, "--expected_rows", expected_rows_flag(rows), *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_one_error_line(result, *phrases):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.mark.slow
def test_download_extracts_verified_mnli_and_removes_zip(tmp_path, server):
    contents = make_zip(server.root / "MNLI.zip")
    data_dir = tmp_path / "data"

    result = run_download(data_dir, server.url("MNLI.zip"))

    assert result.returncode == 0, result.stderr
    assert [path.name for path in data_dir.iterdir()] == ["MNLI"]  # no zip, no temp folder
    mnli = data_dir / "MNLI"
    for name, text in contents.items():
        assert (data_dir / name).read_text(encoding="utf-8") == text, name
    assert "train 4 rows" in result.stdout and str(mnli) in result.stdout
    # The project's reader parses the files, quotes and all.
    train = read_split(data_dir, "mnli", "train")
    assert train.premise[0] == f"{QUOTED} (train 0)"
    assert train.hypothesis[1] == "'quoted' hypothesis 1"
    assert list(train.labels) == [1, 2, 0, 1]


@pytest.mark.slow
def test_wrong_row_count_is_refused_and_leaves_nothing(tmp_path, server):
    make_zip(server.root / "MNLI.zip", rows={**ROWS, "train": 3})
    data_dir = tmp_path / "data"

    result = run_download(data_dir, server.url("MNLI.zip"))

    assert_one_error_line(result, "train.tsv has 3 rows, expected 4", "--url")
    assert not data_dir.exists()  # created for the download, removed with it


@pytest.mark.slow
def test_failed_force_download_keeps_existing_mnli(tmp_path, server):
    make_zip(server.root / "MNLI.zip")
    make_zip(server.root / "bad.zip", rows={**ROWS, "dev_mismatched": 1})
    data_dir = tmp_path / "data"
    assert run_download(data_dir, server.url("MNLI.zip")).returncode == 0
    before = snapshot(data_dir / "MNLI")

    result = run_download(data_dir, server.url("bad.zip"), ROWS, "--force")

    assert_one_error_line(result, "dev_mismatched.tsv has 1 rows, expected 3")
    assert [path.name for path in data_dir.iterdir()] == ["MNLI"]
    assert snapshot(data_dir / "MNLI") == before


@pytest.mark.slow
def test_force_replaces_existing_mnli_with_verified_copy(tmp_path, server):
    make_zip(server.root / "small.zip", rows={split: 1 for split in SPLITS})
    make_zip(server.root / "MNLI.zip")
    data_dir = tmp_path / "data"
    assert run_download(data_dir, server.url("small.zip"), {s: 1 for s in SPLITS}).returncode == 0

    result = run_download(data_dir, server.url("MNLI.zip"), ROWS, "--force")

    assert result.returncode == 0, result.stderr
    assert [path.name for path in data_dir.iterdir()] == ["MNLI"]
    assert len(read_split(data_dir, "mnli", "train").premise) == ROWS["train"]


@pytest.mark.slow
def test_http_404_names_the_url(tmp_path, server):
    url = server.url("missing/MNLI.zip")
    data_dir = tmp_path / "data" / "fine_tune"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("the user's")

    result = run_download(data_dir, url)

    assert_one_error_line(result, url, "404")
    # Folders the download created are gone; what was there before stays.
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_verified_folder_is_not_downloaded_again(tmp_path, server):
    make_zip(server.root / "MNLI.zip")
    data_dir = tmp_path / "data"
    assert run_download(data_dir, server.url("MNLI.zip")).returncode == 0
    before = snapshot(data_dir / "MNLI")
    served_before = list(server.requests)

    result = run_download(data_dir, server.url("MNLI.zip"))

    assert result.returncode == 0, result.stderr
    assert "already downloaded and verified" in result.stdout
    assert server.requests == served_before  # nothing was fetched
    assert snapshot(data_dir / "MNLI") == before


@pytest.mark.slow
def test_unverified_folder_needs_force(tmp_path, server):
    data_dir = tmp_path / "data"
    (data_dir / "MNLI").mkdir(parents=True)
    (data_dir / "MNLI" / "train.tsv").write_text(split_text("train", ROWS["train"]))

    result = run_download(data_dir, server.url("MNLI.zip"))

    assert_one_error_line(result, "--force", "dev_matched.tsv is missing")
    assert server.requests == []
    assert snapshot(data_dir / "MNLI") == {"train.tsv": split_text("train", ROWS["train"]).encode()}


# In-process checks of archive problems, through a file:// URL (the --url mirror case).

def run_main(data_dir: Path, zip_path: Path):
    main(build_parser().parse_args(
        ["--data_dir", str(data_dir), "--url", zip_path.as_uri(),
         "--expected_rows", expected_rows_flag(ROWS)]))


@pytest.mark.parametrize("bad_member",
                         ["../escape.txt", "/abs/escape.txt", "MNLI/../../escape.txt"])
def test_zip_slip_is_rejected(tmp_path, bad_member):
    zip_path = tmp_path / "evil.zip"
    make_zip(zip_path, members={bad_member: "gotcha\n"})
    data_dir = tmp_path / "data"

    with pytest.raises(UserError, match="unsafe path"):
        run_main(data_dir, zip_path)

    assert not data_dir.exists()
    assert not list(tmp_path.rglob("escape.txt"))


@pytest.mark.parametrize("make_bad, message", [
    (lambda path: path.write_bytes(b"<html>not a zip</html>"), "could not unzip"),
    (lambda path: make_zip(path, members={"MNLI/test_matched.tsv": "id\tpremise\n"}),
     "test_matched.tsv has header"),
    (lambda path: make_zip(path, rows={"train": 4}), "has no MNLI/dev_matched.tsv"),
])
def test_damaged_or_foreign_archive_is_rejected(tmp_path, make_bad, message):
    zip_path = tmp_path / "MNLI.zip"
    make_bad(zip_path)
    data_dir = tmp_path / "data"

    with pytest.raises(UserError, match=message):
        run_main(data_dir, zip_path)

    assert not data_dir.exists()


def test_expected_rows_needs_all_splits(tmp_path):
    args = build_parser().parse_args(["--expected_rows", "train=5", "--data_dir", str(tmp_path)])
    with pytest.raises(UserError, match="--expected_rows lacks dev_matched, dev_mismatched, "
                                        "test_matched, test_mismatched"):
        main(args)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--expected_rows", "train=five"])
    assert build_parser().parse_args([]).expected_rows is None  # GLUE's counts, per task


# The other GLUE tasks: zips in their layouts, AX as one file, MRPC built from its sources.

def task_zip(path: Path, name: str, rows: int = 5) -> None:
    from glue_data import write_task
    folder = write_task(path.parent / f"{name}-src", name, rows=rows)
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"{folder.name}/{file.name}")


def rows_flag(name: str, rows: int) -> str:
    from fine_tune.glue import get_task
    return ",".join(f"{split}={rows}" for split in get_task(name).files)


@pytest.mark.parametrize("name", ["rte", "cola", "stsb"])
def test_a_task_zip_is_verified_and_read(tmp_path, name):
    task_zip(tmp_path / "task.zip", name)
    data_dir = tmp_path / "data"
    main(build_parser().parse_args(["--task", name, "--data_dir", str(data_dir), "--url",
                                    (tmp_path / "task.zip").as_uri(), "--expected_rows",
                                    rows_flag(name, 5)]))
    assert len(read_split(data_dir, name, "dev").premise) == 5
    with pytest.raises(UserError, match="train.tsv has 5 rows, expected 6"):
        main(build_parser().parse_args(["--task", name, "--data_dir", str(tmp_path / "other"),
                                        "--url", (tmp_path / "task.zip").as_uri(),
                                        "--expected_rows", rows_flag(name, 6)]))
    assert not (tmp_path / "other").exists()


def test_ax_is_one_file(tmp_path):
    from glue_data import write_task
    source = write_task(tmp_path / "src", "ax", rows=4) / "diagnostic.tsv"
    main(build_parser().parse_args(["--task", "ax", "--data_dir", str(tmp_path / "data"), "--url",
                                    source.as_uri(), "--expected_rows", "test=4"]))
    assert read_split(tmp_path / "data", "ax", "test").index == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_mrpc_is_built_as_glues_script_builds_it(tmp_path, server):
    bom = "\ufeff"
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    train_rows = [f"{i % 2}\t{100 + i}\t{200 + i}\tsentence {i} .\t\" other {i} .\n" for i in range(6)]
    (server.root / "msr_paraphrase_train.txt").write_text(bom + header + "".join(train_rows))
    test_rows = [f"{i % 2}\t{300 + i}\t{400 + i}\ttest {i}\tpair {i}\n" for i in range(3)]
    (server.root / "msr_paraphrase_test.txt").write_text(bom + header + "".join(test_rows))
    (server.root / "mrpc_dev_ids.tsv").write_text("101\t201\n104\t204\n")
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "fine_tune.download", "--task", "mrpc", "--data_dir", str(data_dir),
         "--url", server.url(""), "--expected_rows", "train=4,dev=2,test=3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    folder = data_dir / "MRPC"
    assert (folder / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t#1 ID")
    assert (folder / "test.tsv").read_text().splitlines() == [
        "index\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t300\t400\ttest 0\tpair 0",
        "1\t301\t401\ttest 1\tpair 1", "2\t302\t402\ttest 2\tpair 2"]
    dev = read_split(data_dir, "mrpc", "dev")
    assert dev.premise == ["sentence 1 .", "sentence 4 ."] and dev.labels.tolist() == [1, 0]
    assert read_split(data_dir, "mrpc", "train").hypothesis[0] == '" other 0 .'
    assert sorted(p.name for p in data_dir.iterdir()) == ["MRPC"]


def test_all_refuses_one_tasks_url():
    with pytest.raises(UserError, match="--url and --expected_rows name one task's copy"):
        main(build_parser().parse_args(["--task", "all", "--url", "file:///x.zip"]))
