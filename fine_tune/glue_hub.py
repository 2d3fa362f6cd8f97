"""GLUE from a Hugging Face hub repository laid out as nyu-mll/glue (`--source hub`).

The hub keeps each task as parquet files, <config>/<split>-NNNNN-of-NNNNN.parquet (the
repository's main branch; <config>/<split>/NNNN.parquet as its parquet-converter branch
writes them is read too), with the text columns, `label` (a class id, -1 in test splits, a
float for STS-B) and `idx` (the row number that submission files repeat). This module
fetches a task's files with huggingface_hub (its cache, HF_HUB_OFFLINE and login apply)
and writes them out as GLUE's own files of the task table's layouts, so that everything
after the download -- the one reader, the row-count check, the token cache, submissions
-- is the same for both sources. Columns the hub does not carry (MNLI's genre, pair ids
and parse trees, its annotators' label1..label5, STS-B's genre/file/year, QQP's qid1/qid2,
MRPC's string ids, CoLA's source and original mark) are left empty.

Class ids become GLUE's label strings through the class names the hub publishes: the
`huggingface` features metadata that the `datasets` library writes into each parquet
file's schema, or else the dataset card's YAML (README.md, `dataset_info`). A name the
task table does not know is refused rather than guessed by position.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fine_tune.errors import UserError

HUB_REPO = "nyu-mll/glue"
LABEL, INDEX = "label", "idx"
CARD = "README.md"
RECORD = "hub_source.json"  # written into the task folder: repository, revision, commit


class BadHubData(Exception):
    """A hub file that is missing or not laid out as nyu-mll/glue; the caller adds the fix."""


@dataclass(frozen=True)
class HubRepo:
    """--hub_repo and --revision: an owner/name on the hub, or a local folder laid out as
    one (a mirror; --revision then does not apply)."""
    repo: str = HUB_REPO
    revision: str | None = None

    @property
    def folder(self) -> Path | None:
        """The local folder --hub_repo names (an existing folder wins over a hub id)."""
        path = Path(self.repo).expanduser()
        return path.resolve() if path.is_dir() else None

    def check(self) -> None:
        """One line for a --hub_repo that is neither a folder nor a repository id."""
        if self.folder is not None:
            if self.revision is not None:
                raise UserError(f"--revision {self.revision} applies to a hub repository, not "
                                f"to the local folder --hub_repo {self.repo}: drop --revision")
            return
        if self.repo.startswith((".", "/", "~")) or self.repo.count("/") > 1 or \
                Path(self.repo).expanduser().exists():
            raise UserError(f"--hub_repo {self.repo} is not a folder: give an existing folder "
                            f"laid out as {HUB_REPO}, or a hub repository id such as {HUB_REPO}")


def split_files(root: Path, config: str, split: str) -> list:
    """The parquet files of one split, in shard order."""
    files = sorted((root / config).glob(f"{split}-*.parquet"))
    return files or sorted((root / config / split).glob("*.parquet"))


def snapshot(hub: HubRepo, copy, commit: str | None = None) -> tuple[Path, str]:
    """(a folder holding <config>/..., how the source is named in messages). A hub
    repository is fetched with snapshot_download (only the task's files and the card), at
    `commit` when given (so that every task of `--task all` comes from one commit)."""
    hub.check()
    if hub.folder is not None:
        return hub.folder, f"the folder {hub.folder}"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    patterns = [CARD] + [pattern for split in copy.splits.values() for pattern in
                         (f"{copy.config}/{split}-*.parquet", f"{copy.config}/{split}/*.parquet")]
    at = f" at revision {hub.revision}" if hub.revision else ""
    try:
        folder = Path(snapshot_download(hub.repo, repo_type="dataset",
                                        revision=commit or hub.revision, allow_patterns=patterns))
    except HFValidationError:
        raise UserError(f"--hub_repo {hub.repo} is not a hub repository id (owner/name) nor "
                        f"an existing folder") from None
    except RevisionNotFoundError:
        raise UserError(f"{hub.repo} has no revision {hub.revision!r} on the hub: pass "
                        f"--revision of an existing branch, tag or commit") from None
    except GatedRepoError:
        raise UserError(f"{hub.repo} is gated on the hub: accept its terms on the hub and "
                        f"log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise UserError(f"no dataset repository {hub.repo} on the hub (or it is private: log "
                        f"in with `hf auth login`); check --hub_repo") from None
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
            raise UserError(f"HF_HUB_OFFLINE is set and {hub.repo}{at} is not in the hub cache: "
                            f"unset HF_HUB_OFFLINE, or run this once with network access") from None
        raise UserError(f"could not reach the hub for {hub.repo}{at} and it is not in the hub "
                        f"cache: check your network, or use --source glue") from None
    except Exception as error:
        # A dropped connection, a timeout or a proxy error (huggingface_hub's HTTP library
        # raises its own classes, not OSError), a storage backend's failure, a full disk.
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"download of {hub.repo}{at} from the hub failed "
                        f"({type(error).__name__}: {first}); try again (finished files stay "
                        f"in the hub cache)") from None
    return folder, f"{hub.repo} at commit {folder.name}"


def class_names(schema, root: Path, config: str) -> list | None:
    """The hub's class names of `label`, by class id: from the parquet schema's
    `huggingface` metadata, else from the dataset card; None when neither has them."""
    metadata = (schema.metadata or {}).get(b"huggingface")
    if metadata:
        try:
            feature = json.loads(metadata)["info"]["features"][LABEL]
        except (ValueError, KeyError, TypeError):
            feature = None
        if isinstance(feature, dict) and isinstance(feature.get("names"), list):
            return feature["names"]
    card = root / CARD
    if card.is_file():
        from huggingface_hub.repocard import metadata_load
        try:
            infos = (metadata_load(card) or {}).get("dataset_info") or []
        except Exception:  # a card whose YAML does not parse holds no names for us
            return None
        for info in infos if isinstance(infos, list) else [infos]:
            if not isinstance(info, dict) or info.get("config_name", "default") != config:
                continue
            for feature in info.get("features") or []:
                dtype = feature.get("dtype") if isinstance(feature, dict) else None
                names = ((dtype.get("class_label") or {}).get("names")
                         if isinstance(dtype, dict) else None)
                if feature.get("name") != LABEL or not isinstance(names, dict):
                    continue
                ids = {str(key).strip(): name for key, name in names.items()}
                if set(ids) != {str(i) for i in range(len(ids))}:
                    return None  # ids with gaps: no position may stand in for a missing one
                return [ids[str(i)] for i in range(len(ids))]
    return None


def read_hub_split(root: Path, copy, split: str, labelled: bool) -> dict:
    """{column: values} of one split, with `label` as the hub's class names (or floats).
    Every shard is checked: its columns, their types, no missing index or text."""
    import pyarrow
    import pyarrow.parquet as pq

    hub_split = copy.splits[split]
    files = split_files(root, copy.config, hub_split)
    if not files:
        raise BadHubData(f"has no {copy.config}/{hub_split}-*.parquet")
    wanted = [*copy.text, INDEX] + ([LABEL] if labelled else [])
    label_type = pyarrow.types.is_floating if copy.labels is None else pyarrow.types.is_integer
    tables = []
    for file in files:
        name = file.relative_to(root).as_posix()
        try:
            table = pq.read_table(file)
        except (pyarrow.ArrowException, OSError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BadHubData(f"{name} is not a readable parquet file ({first})") from None
        missing = [column for column in wanted if column not in table.column_names]
        if missing:
            raise BadHubData(f"{name} has columns {table.column_names}, without "
                             f"{', '.join(missing)}")
        types = {column: table.schema.field(column).type for column in wanted}
        wrong = [f"{column} is {kind}" for column, kind in types.items() if not (
            (pyarrow.types.is_string(kind) or pyarrow.types.is_large_string(kind))
            if column in copy.text else pyarrow.types.is_integer(kind) if column == INDEX
            else label_type(kind) or (copy.labels is None and pyarrow.types.is_integer(kind)))]
        if wrong:
            raise BadHubData(f"{name}: {', '.join(wrong)}, expected texts as strings, {INDEX} "
                             f"as integers and {LABEL} as "
                             + ("float scores" if copy.labels is None else "class ids"))
        tables.append(table.select(wanted))
    # Each shard to Python values on its own: shards whose accepted types differ (idx int32
    # in one, int64 in another; string and large_string) join without a schema to agree on.
    columns = {column: [value for table in tables for value in table.column(column).to_pylist()]
               for column in wanted}
    where = f"{copy.config}/{hub_split}"
    for number, index in enumerate(columns[INDEX]):
        if index is None:
            raise BadHubData(f"{where} row {number} has no {INDEX}")
    if len(set(columns[INDEX])) != len(columns[INDEX]):
        raise BadHubData(f"{where} repeats {INDEX} values (submission files need each once)")
    for name in copy.text:
        for number, text in enumerate(columns[name]):
            if text is None or any(c in text for c in "\t\n\r"):
                raise BadHubData(f"{where} row {number}: {name} is "
                                 f"{'missing' if text is None else 'a text with a tab or line break'}, "
                                 f"which GLUE's files cannot hold")
    if labelled:
        columns[LABEL] = hub_labels(columns[LABEL], copy, hub_split,
                                    None if copy.labels is None else
                                    class_names(tables[0].schema, root, copy.config))
    return columns


def hub_labels(ids: list, copy, hub_split: str, names: list | None) -> list:
    """Each row's label as GLUE's files write it: the class name the hub publishes for the
    id, through the task table; STS-B's scores as the shortest text of the stored float."""
    import math

    import numpy as np

    where = f"{copy.config}/{hub_split}"
    if copy.labels is None:
        for number, value in enumerate(ids):
            if value is None or not math.isfinite(value):
                raise BadHubData(f"{where} row {number} has score {value} in a labelled split")
        return [str(np.float32(value)) for value in ids]
    if names is None:
        raise BadHubData(f"{where} publishes no class names for {LABEL} (neither in the "
                         f"parquet schema's huggingface metadata nor in {CARD})")
    if set(names) != set(copy.labels) or len(set(names)) != len(names):
        raise BadHubData(f"{where} names its classes {names}, expected the names "
                         f"{sorted(copy.labels)}")
    labels = []
    for number, class_id in enumerate(ids):
        if class_id is None or not 0 <= class_id < len(names):
            raise BadHubData(f"{where} row {number} has label {class_id} in a labelled split "
                             f"(class ids are 0..{len(names) - 1})")
        labels.append(copy.labels[names[class_id]])
    return labels


def write_glue_layout(columns: dict, copy, layout, path: Path) -> None:
    """GLUE's file of one split: the layout's header, then one row per hub row with the
    texts, the label and idx in their columns and every other column empty."""
    count = len(columns[INDEX])
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        if layout.header is not None:
            file.write("\t".join(layout.header) + "\n")
        for row in range(count):
            fields = [""] * layout.width
            for column, name in zip(layout.text, copy.text):
                fields[column] = columns[name][row]
            if layout.index is not None:
                fields[layout.index] = str(columns[INDEX][row])
            if layout.label is not None:
                fields[layout.label] = columns[LABEL][row]
            file.write("\t".join(fields) + "\n")


def fetch(task, hub: HubRepo, work_dir: Path, commit: str | None = None) -> tuple:
    """Write the task's GLUE-layout files into work_dir/<folder> from the hub (at `commit`
    if given); returns the folder, how the source is named and the commit used (None for
    a local folder), which the folder's hub_source.json records for a paper."""
    if task.hub is None:
        raise UserError(f"--task {task.name} has no copy on the hub in the task table: "
                        f"use --source glue")
    root, described = snapshot(hub, task.hub, commit)
    commit = None if hub.folder is not None else root.name
    folder = work_dir / task.folder
    folder.mkdir()
    try:
        for split, (name, layout) in task.files.items():
            columns = read_hub_split(root, task.hub, split, layout.label is not None)
            write_glue_layout(columns, task.hub, layout, folder / name)
    except BadHubData as problem:
        if hub.folder is not None:
            fix = f"fix the folder, or give --hub_repo a copy laid out as {HUB_REPO}"
        else:
            fix = (f"the copy in the hub cache may lack it if the hub could not be reached "
                   f"(run once with network access, without HF_HUB_OFFLINE); a --revision "
                   f"must be a commit with parquet files (older commits of {HUB_REPO} hold a "
                   f"loading script only); or use --source glue")
        raise UserError(f"{described}: {problem}; {fix}") from None
    (folder / RECORD).write_text(json.dumps(
        {"source": "hub", "repo": str(hub.folder or hub.repo), "revision": hub.revision,
         "commit": commit}, indent=1) + "\n")
    return folder, described, commit
