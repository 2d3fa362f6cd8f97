"""Download GLUE tasks into <data_dir>/<folder> and check every file before using it.

Two sources (--source): GLUE's own addresses (below), or the Hugging Face hub's copy
(fine_tune.glue_hub), written out in the same layouts so everything downstream is one path.

For MNLI, the same result as the seed's shell steps (wget MNLI.zip; unzip into
data/fine_tune/; rm MNLI.zip); for the other tasks, what GLUE's own download script
makes, from the same addresses (MRPC built from the MSR paraphrase files as that script
builds it). Nothing reaches <data_dir>/<folder> until every file has GLUE's layout and
row count, and a failed run leaves no zip, temporary folder or half-made task folder.

    python -m fine_tune.download [--task mnli|NAME|all] [--data_dir data/fine_tune]
                                 [--source glue|hub|auto] [--hub_repo REPO] [--revision REV]
                                 [--url URL] [--force]
"""
import argparse
import http.client
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fine_tune import glue_hub
from fine_tune.cli import new_parser
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import LABELED_SPLITS, MNLI, TASKS, TEST_SPLITS, get_task
from fine_tune.glue_hub import HUB_REPO, HubRepo

TIMEOUT_S = 60  # per socket operation, so a stalled server fails instead of hanging
CHUNK_BYTES = 1 << 20
MRPC_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt")
MRPC_DEV_IDS = "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv"
MRPC_TEST_HEADER = "index\t#1 ID\t#2 ID\t#1 String\t#2 String"


class BadData(Exception):
    """A split file that is missing or differs from GLUE's; the caller adds the fix."""


def parse_expected_rows(text: str) -> dict:
    """`train=392702,dev_matched=9815,...` -> {split: rows}; checked against the task later."""
    counts = {}
    known = set(LABELED_SPLITS) | set(TEST_SPLITS)
    for item in text.split(","):
        split, sep, rows = item.strip().partition("=")
        if not sep or split not in known or not rows.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"bad item {item!r}: expected SPLIT=ROWS with SPLIT one of the task's splits")
        counts[split] = int(rows)
    return counts


def count_rows(path: Path, layout) -> int:
    """Data rows of one file, after checking its header (a byte-order mark before it, as in
    GLUE's MRPC files, is allowed). Streams the file (MNLI's train is ~300 MB) and counts
    lines as fine_tune.data.read_tsv splits them: on '\\n', a trailing empty line ignored."""
    if not path.is_file():
        raise BadData(f"{path.name} is missing")
    with open(path, "rb") as file:
        first_line = file.readline()
        newlines, last_byte = int(first_line.endswith(b"\n")), first_line[-1:]
        while chunk := file.read(CHUNK_BYTES):
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if not first_line:
        raise BadData(f"{path.name} is empty")
    lines = newlines + (last_byte != b"\n")  # a last line without '\n' still counts
    if layout.header is None:
        return lines
    try:
        header = first_line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8-sig").split("\t")
    except UnicodeDecodeError:
        raise BadData(f"{path.name} does not start with a UTF-8 header") from None
    if header != list(layout.header):
        raise BadData(f"{path.name} has header {header}, expected {list(layout.header)}")
    return lines - 1


def verify(folder: Path, task, expected_rows: dict) -> dict:
    """{split: rows} if every file of the task matches GLUE's layout and row count."""
    counts = {}
    for split, (name, layout) in task.files.items():
        rows = count_rows(folder / name, layout)
        if rows != expected_rows[split]:
            raise BadData(f"{name} has {rows} rows, expected {expected_rows[split]}")
        counts[split] = rows
    return counts


def download(url: str, destination: Path) -> None:
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, \
                open(destination, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0) or None
            # disable=None: no bar when stderr is not a terminal (logs, tests)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"download {url.rsplit('/', 1)[-1]}", disable=None) as progress:
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    progress.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise UserError(f"could not download {url}: HTTP {error.code} {error.reason}; "
                        f"check the address or pass --url of a working copy") from None
    except urllib.error.URLError as error:
        raise UserError(f"could not download {url}: {error.reason}; check your network "
                        f"or pass --url of a reachable copy") from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        # timeouts, dropped connections, bad URLs, a full disk
        raise UserError(f"could not download {url}: {error or type(error).__name__}; "
                        f"try again or pass --url of a working copy") from None
    received = destination.stat().st_size
    if total and received != total:
        raise UserError(f"download of {url} stopped at {received} of {total} bytes; try again")


def extract(zip_path: Path, url: str, folder: Path, task) -> None:
    """Unzip everything (README, original/, ...) after checking that the archive holds the
    task's files and that no member would land outside `folder` (zip slip)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            for name in names:
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise UserError(f"{url} contains an unsafe path {name!r} (absolute or with "
                                    f"'..'); refusing to unzip it, pass --url of a correct copy")
            missing = [f"{task.folder}/{file}" for file, _ in task.files.values()
                       if f"{task.folder}/{file}" not in names]
            if missing:
                raise UserError(f"{url} has no {', '.join(missing)}: it is not GLUE's "
                                f"{task.url.rsplit('/', 1)[-1]}; pass --url of a correct copy")
            archive.extractall(folder)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise UserError(f"could not unzip {url} ({error}): the download is damaged or not a "
                        f"zip; try again or pass --url of a correct copy") from None


def fetch_zip(task, url: str, work_dir: Path) -> Path:
    zip_path = work_dir / "download.zip"
    download(url, zip_path)
    extract(zip_path, url, work_dir / "unzipped", task)
    zip_path.unlink()
    return work_dir / "unzipped" / task.folder


def fetch_file(task, url: str, work_dir: Path) -> Path:
    """A task that is one file (AX: diagnostic.tsv)."""
    folder = work_dir / task.folder
    folder.mkdir()
    (file_name, _), = task.files.values()
    download(url, folder / file_name)
    return folder


def fetch_mrpc(task, url: str, work_dir: Path) -> Path:
    """MRPC as GLUE's download script builds it: train.tsv and dev.tsv split the MSR train
    file by GLUE's list of dev pairs, keeping its header line (byte-order mark included);
    test.tsv numbers the MSR test rows from 0 under GLUE's own header, without labels.
    `url` is the folder of the two MSR files; the dev pairs come from GLUE's address, or
    from the same folder when --url is given."""
    base = url if url.endswith("/") else url + "/"
    for name in MRPC_FILES:
        download(base + name, work_dir / name)
    dev_ids_url = MRPC_DEV_IDS if url == task.url else base + MRPC_DEV_IDS.rsplit("/", 1)[-1]
    download(dev_ids_url, work_dir / "dev_ids.tsv")
    dev_ids = {tuple(line.strip().split("\t")) for line in
               (work_dir / "dev_ids.tsv").read_text(encoding="utf-8").splitlines() if line.strip()}
    folder = work_dir / task.folder
    folder.mkdir()
    with open(work_dir / MRPC_FILES[0], encoding="utf-8") as source, \
            open(folder / "train.tsv", "w", encoding="utf-8", newline="\n") as train, \
            open(folder / "dev.tsv", "w", encoding="utf-8", newline="\n") as dev:
        header = source.readline()
        train.write(header)
        dev.write(header)
        for row in source:
            fields = row.strip().split("\t")
            (dev if tuple(fields[1:3]) in dev_ids else train).write(
                "\t".join(fields) + "\n")
    with open(work_dir / MRPC_FILES[1], encoding="utf-8-sig") as source, \
            open(folder / "test.tsv", "w", encoding="utf-8", newline="\n") as test:
        source.readline()
        test.write(MRPC_TEST_HEADER + "\n")
        for index, row in enumerate(source):
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise UserError(f"{base}{MRPC_FILES[1]} line {index + 2} has {len(fields)} "
                                f"tab-separated fields, not MSR's 5: it is not the MSR "
                                f"paraphrase file; {GlueAddress.fix}")
            label, id1, id2, first, second = fields
            test.write(f"{index}\t{id1}\t{id2}\t{first}\t{second}\n")
    return folder


def build_mrpc(task, url: str, work_dir: Path) -> Path:
    """fetch_mrpc, with files that are not MSR's text (an HTML error page) as one line."""
    try:
        return fetch_mrpc(task, url, work_dir)
    except UnicodeDecodeError as error:
        raise UserError(f"a file from {url} is not UTF-8 text ({error.reason}): it is not "
                        f"the MSR paraphrase data; {GlueAddress.fix}") from None


FETCH = {"zip": fetch_zip, "file": fetch_file, "mrpc": build_mrpc}


def move_into_place(new: Path, target: Path) -> None:
    """Put `new` at `target`; an old `target` is removed only once `new` is there."""
    if not target.exists():
        new.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
    old.rmdir()  # only a free name next to target was needed, so the renames stay atomic
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


@dataclass(frozen=True)
class GlueAddress:
    """GLUE's own addresses (the task table's url), or --url's copy."""
    url: str | None = None
    fix = "pass --url of a correct copy"

    def fetch(self, task, work_dir: Path) -> tuple[Path, str]:
        url = self.url or task.url
        print(f"downloading {url}")
        return FETCH[task.source](task, url, work_dir), url


@dataclass
class Hub:
    """A Hugging Face hub repository laid out as nyu-mll/glue, or a local copy of one. The
    first task fetched pins the commit for the others (a branch may move during --task all)."""
    repo: HubRepo = HubRepo()
    commit: str | None = None
    fix = "pass --hub_repo or --revision of a correct copy"

    def fetch(self, task, work_dir: Path) -> tuple[Path, str]:
        print(f"getting {task.folder} from {self.repo.repo}"
              + (f" at revision {self.repo.revision}" if self.repo.revision else ""))
        folder, described, self.commit = glue_hub.fetch(task, self.repo, work_dir, self.commit)
        return folder, described


def fetch_verified(source, task, work_dir: Path, expected_rows: dict) -> tuple:
    """(folder, where it came from, {split: rows}) once every file has GLUE's layout and
    row count; a source listing several (--source auto) tries them in turn."""
    if isinstance(source, tuple):
        failures = []
        for number, each in enumerate(source):
            attempt = work_dir / str(number)
            attempt.mkdir()
            try:
                return fetch_verified(each, task, attempt, expected_rows)
            except UserError as error:
                failures.append(str(error))
                if number + 1 < len(source):
                    print(f"that failed ({error}); trying the next source")
        raise UserError(" and then: ".join(failures))
    built, described = source.fetch(task, work_dir)
    try:
        counts = verify(built, task, expected_rows)
    except BadData as problem:
        raise UserError(f"{problem}: the download from {described} is truncated or not GLUE's "
                        f"{task.folder}; try again or {source.fix}") from None
    return built, described, counts


def fetch_task(task, source, data_dir: Path, expected_rows: dict, force: bool) -> None:
    target = data_dir / task.folder
    if target.exists() and not force:
        try:
            counts = verify(target, task, expected_rows)
        except BadData as problem:
            raise UserError(f"{target} exists but is not a complete {task.folder} ({problem}); "
                            f"pass --force to replace it with a fresh download") from None
        print(f"{target} is already downloaded and verified ({format_counts(counts)}); "
              f"pass --force to download it again")
        return

    created = [folder for folder in (data_dir, *data_dir.parents) if not folder.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --data_dir {data_dir} ({error})") from None
    # One temporary folder inside data_dir holds the downloads and what they unpack to, so
    # the final move is a rename on one file system and cleanup is a single removal.
    work_dir = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{task.folder}-download-"))
    try:
        built, described, counts = fetch_verified(source, task, work_dir, expected_rows)
        move_into_place(built, target)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if not target.exists():  # a failed download leaves no empty folders behind
            for folder in created:  # deepest first
                try:
                    folder.rmdir()
                except OSError:
                    break
    print(f"{task.folder} is ready in {target} ({format_counts(counts)}), from {described}")


def source_of(args):
    """The --source settings as one source, or a tuple tried in turn (auto)."""
    if args.source == "hub" and args.url:
        raise UserError("--url names a copy of GLUE's own files: with --source hub give "
                        "--hub_repo instead, or use --source glue or auto")
    if args.source == "glue" and (args.hub_repo or args.revision):
        raise UserError("--hub_repo and --revision apply to the hub: add --source hub "
                        "(or auto)")
    hub = Hub(HubRepo(args.hub_repo or HUB_REPO, args.revision))
    hub.repo.check()
    return {"glue": GlueAddress(args.url), "hub": hub,
            "auto": (GlueAddress(args.url), hub)}[args.source]


def main(args) -> None:
    names = list(TASKS) if args.task == "all" else [args.task]
    if len(names) > 1 and (args.url or args.expected_rows):
        raise UserError("--url and --expected_rows name one task's copy: use them with "
                        "--task NAME, not --task all")
    source = source_of(args)
    for name in names:
        task = get_task(name)
        expected = dict(task.rows)
        if args.expected_rows:
            missing = [split for split in task.files if split not in args.expected_rows]
            if missing:
                raise UserError(f"--expected_rows lacks {', '.join(missing)}: give every split "
                                f"of --task {name} ({', '.join(task.files)})")
            expected = {split: args.expected_rows[split] for split in task.files}
        fetch_task(task, source, Path(args.data_dir), expected, args.force)


def format_counts(counts: dict) -> str:
    return ", ".join(f"{split} {rows} rows" for split, rows in counts.items())


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Download GLUE tasks into <data_dir>/<folder> (MNLI/, RTE/, ...) and "
                        "verify every file's layout and row count.",
                        prog="python -m fine_tune.download")
    parser.add_argument("--task", default="mnli", choices=(*TASKS, "all"),
                        help="the task to download, or all of them")
    parser.add_argument("--data_dir", default="data/fine_tune",
                        help="folder to put the task's folder in (MNLI/train.tsv, ...)")
    parser.add_argument("--source", default="glue", choices=("glue", "hub", "auto"),
                        help="where to get the files: glue, the addresses of GLUE's own download "
                             "script (as the seed's wget does); hub, the Hugging Face hub's "
                             f"parquet files ({HUB_REPO}, see --hub_repo), written out in GLUE's "
                             "layouts with the columns the hub lacks (MNLI's genre and parses, "
                             "...) left empty; auto, GLUE's address first and the hub if that "
                             "fails, saying which was used")
    parser.add_argument("--hub_repo", default=None,
                        help="with --source hub/auto: the hub dataset repository laid out as "
                             f"{HUB_REPO} (parquet files <config>/<split>-*.parquet), or a local "
                             f"folder laid out that way, for mirrors (default {HUB_REPO}); "
                             "huggingface_hub's cache, HF_HUB_OFFLINE, HF_ENDPOINT and login "
                             "apply")
    parser.add_argument("--revision", default=None,
                        help="with --source hub/auto: the branch, tag or commit of --hub_repo to "
                             "use; pin a commit for a paper (the commit used is printed and "
                             f"recorded in <folder>/{glue_hub.RECORD}) (default: main)")
    parser.add_argument("--url", default=None,
                        help="where to get the task: a mirror or a local file:// URL of GLUE's "
                             "archive (AX: of AX.tsv; MRPC: of the folder holding "
                             "msr_paraphrase_train.txt, msr_paraphrase_test.txt and "
                             "mrpc_dev_ids.tsv) (default: GLUE's own address)")
    parser.add_argument("--expected_rows", type=parse_expected_rows, default=None,
                        help="data rows each split must have (header excluded), every split "
                             "as SPLIT=ROWS,...; change only for a mirror or a subset "
                             "(default: GLUE's release, e.g. MNLI's "
                             + ",".join(f"{split}={n}" for split, n in MNLI.rows.items()) + ")")
    parser.add_argument("--force", action="store_true",
                        help="download again and replace an existing task folder "
                             "(only once the new copy is verified)")
    return parser


if __name__ == "__main__":
    run_cli(main, build_parser().parse_args())
