"""Download GLUE's MNLI into <data_dir>/MNLI and check every split before using it.

Same result as the original shell steps (wget MNLI.zip; unzip into data/fine_tune/;
rm MNLI.zip), but nothing reaches <data_dir>/MNLI until all five files have GLUE's
header and row count, and a failed run leaves no zip, temp folder or half-made MNLI.

    python -m fine_tune.download [--data_dir data/fine_tune] [--url URL] [--force]
"""
import argparse
import http.client
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from fine_tune.cli import new_parser
from fine_tune.data import COLUMNS, EXPECTED_ROWS, GLUE_MNLI_URL, SPLITS, TASK_DIRS, layout_of
from fine_tune.errors import UserError, run_cli

MNLI_DIR = TASK_DIRS["mnli"]
TIMEOUT_S = 60  # per socket operation, so a stalled server fails instead of hanging
CHUNK_BYTES = 1 << 20


class BadData(Exception):
    """A split file that is missing or differs from GLUE's; the caller adds the fix."""


def parse_expected_rows(text: str) -> dict:
    """`train=392702,dev_matched=9815,...` -> {split: rows}; all five splits required."""
    counts = {}
    for item in text.split(","):
        split, sep, rows = item.strip().partition("=")
        if not sep or split not in SPLITS or not rows.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"bad item {item!r}: expected SPLIT=ROWS with SPLIT one of {', '.join(SPLITS)}")
        counts[split] = int(rows)
    missing = [split for split in SPLITS if split not in counts]
    if missing:
        raise argparse.ArgumentTypeError(f"missing splits: {', '.join(missing)}")
    return counts


def count_rows(path: Path, split: str) -> int:
    """Data rows of one split file, after checking its header. Streams the file (train is
    ~300 MB) and counts lines as fine_tune.data.read_tsv splits them: on '\\n', with a
    trailing empty line ignored."""
    if not path.is_file():
        raise BadData(f"{path.name} is missing")
    with open(path, "rb") as file:
        first_line = file.readline()
        newlines, last_byte = 0, b"\n"
        while chunk := file.read(CHUNK_BYTES):
            newlines += chunk.count(b"\n")
            last_byte = chunk[-1:]
    if not first_line:
        raise BadData(f"{path.name} is empty")
    try:
        header = first_line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8").split("\t")
    except UnicodeDecodeError:
        raise BadData(f"{path.name} does not start with a UTF-8 header") from None
    expected_header = COLUMNS[layout_of(split)]
    if header != expected_header:
        raise BadData(f"{path.name} has header {header}, expected {expected_header}")
    return newlines + (last_byte != b"\n")  # a last line without '\n' still counts


def verify(mnli_dir: Path, expected_rows: dict) -> dict:
    """{split: rows} if every split file matches GLUE's layout and expected row count."""
    counts = {}
    for split in SPLITS:
        rows = count_rows(mnli_dir / f"{split}.tsv", split)
        if rows != expected_rows[split]:
            raise BadData(f"{split}.tsv has {rows} rows, expected {expected_rows[split]}")
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
                      desc="download MNLI.zip", disable=None) as progress:
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


def extract(zip_path: Path, url: str, folder: Path) -> None:
    """Unzip everything (README, original/, ...) after checking that the archive is
    MNLI-shaped and that no member would land outside `folder` (zip slip)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            for name in names:
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise UserError(f"{url} contains an unsafe path {name!r} (absolute or with "
                                    f"'..'); refusing to unzip it, pass --url of a correct copy")
            missing = [f"{MNLI_DIR}/{split}.tsv" for split in SPLITS
                       if f"{MNLI_DIR}/{split}.tsv" not in names]
            if missing:
                raise UserError(f"{url} has no {', '.join(missing)}: it is not GLUE's MNLI.zip; "
                                f"pass --url of a correct copy")
            archive.extractall(folder)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise UserError(f"could not unzip {url} ({error}): the download is damaged or not a "
                        f"zip; try again or pass --url of a correct copy") from None


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


def main(args) -> None:
    data_dir = Path(args.data_dir)
    mnli_dir = data_dir / MNLI_DIR
    expected_rows = args.expected_rows

    if mnli_dir.exists() and not args.force:
        try:
            counts = verify(mnli_dir, expected_rows)
        except BadData as problem:
            raise UserError(f"{mnli_dir} exists but is not a complete MNLI ({problem}); "
                            f"pass --force to replace it with a fresh download") from None
        print(f"{mnli_dir} is already downloaded and verified ({format_counts(counts)}); "
              f"pass --force to download it again")
        return

    created = [folder for folder in (data_dir, *data_dir.parents) if not folder.exists()]
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --data_dir {data_dir} ({error})") from None
    # One temporary folder inside data_dir holds the zip and what it unpacks to, so the
    # final move is a rename on one file system and cleanup is a single removal.
    work_dir = Path(tempfile.mkdtemp(dir=data_dir, prefix=".MNLI-download-"))
    try:
        zip_path, unzip_dir = work_dir / "MNLI.zip", work_dir / "unzipped"
        print(f"downloading {args.url}")
        download(args.url, zip_path)
        extract(zip_path, args.url, unzip_dir)
        zip_path.unlink()
        try:
            counts = verify(unzip_dir / MNLI_DIR, expected_rows)
        except BadData as problem:
            raise UserError(f"{problem}: the download is truncated or not GLUE's MNLI; try "
                            f"again or pass --url of a correct copy") from None
        move_into_place(unzip_dir / MNLI_DIR, mnli_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if not mnli_dir.exists():  # a failed download leaves no empty folders behind
            for folder in created:  # deepest first
                try:
                    folder.rmdir()
                except OSError:
                    break
    print(f"MNLI is ready in {mnli_dir} ({format_counts(counts)})")


def format_counts(counts: dict) -> str:
    return ", ".join(f"{split} {rows} rows" for split, rows in counts.items())


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("Download GLUE's MNLI into <data_dir>/MNLI and verify every split.",
                        prog="python -m fine_tune.download")
    parser.add_argument("--data_dir", default="data/fine_tune",
                        help="folder to put MNLI/ in (train.tsv, dev_matched.tsv, ...)")
    parser.add_argument("--url", default=GLUE_MNLI_URL,
                        help="where to get MNLI.zip: a mirror or a local file:// URL")
    parser.add_argument("--expected_rows", type=parse_expected_rows,
                        default=",".join(f"{split}={n}" for split, n in EXPECTED_ROWS.items()),
                        help="data rows each split must have (header excluded), all five "
                             "splits as SPLIT=ROWS,...; change only for a mirror or a subset")
    parser.add_argument("--force", action="store_true",
                        help="download again and replace an existing <data_dir>/MNLI "
                             "(only once the new copy is verified)")
    return parser


if __name__ == "__main__":
    run_cli(main, build_parser().parse_args())
