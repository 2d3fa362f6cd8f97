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
        path = Path(self.repo).expanduser()
        return path if path.is_dir() else None

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


def snapshot(hub: HubRepo, copy) -> tuple[Path, str]:
    """(a folder holding <config>/..., how the source is named in messages). A hub
    repository is fetched with snapshot_download (only the task's files and the card)."""
    hub.check()
    if hub.folder is not None:
        return hub.folder, f"the folder {hub.folder}"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    patterns = [CARD] + [pattern for split in copy.splits.values() for pattern in
                         (f"{copy.config}/{split}-*.parquet", f"{copy.config}/{split}/*.parquet")]
    at = f" at revision {hub.revision}" if hub.revision else ""
    try:
        folder = Path(snapshot_download(hub.repo, repo_type="dataset", revision=hub.revision,
                                        allow_patterns=patterns))
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
    except (HfHubHTTPError, OSError) as error:  # a dropped connection, a full disk, ...
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"download of {hub.repo}{at} from the hub failed ({first}); try "
                        f"again (finished files stay in the hub cache)") from None
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
                names = (((feature.get("dtype") or {}) if isinstance(feature.get("dtype"), dict)
                          else {}).get("class_label") or {}).get("names")
                if feature.get("name") == LABEL and isinstance(names, dict):
                    return [names[key] for key in sorted(names, key=int)]
    return None


def read_hub_split(root: Path, copy, split: str, labelled: bool) -> dict:
    """{column: values} of one split, with `label` as the hub's class names (or floats)."""
    import pyarrow
    import pyarrow.parquet as pq

    hub_split = copy.splits[split]
    files = split_files(root, copy.config, hub_split)
    if not files:
        raise BadHubData(f"has no {copy.config}/{hub_split}-*.parquet")
    wanted = [*copy.text, INDEX] + ([LABEL] if labelled else [])
    try:
        tables = [pq.read_table(file) for file in files]
        missing = [name for name in wanted if name not in tables[0].column_names]
        if missing:
            raise BadHubData(f"{files[0].relative_to(root)} has columns "
                             f"{tables[0].column_names}, without {', '.join(missing)}")
        table = pyarrow.concat_tables([t.select(wanted) for t in tables])
    except (pyarrow.ArrowException, OSError) as error:
        raise BadHubData(f"{files[0].relative_to(root)} is not a readable parquet file "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    columns = table.to_pydict()
    for name in copy.text:
        for number, text in enumerate(columns[name]):
            if text is None or any(c in text for c in "\t\n\r"):
                raise BadHubData(f"{copy.config}/{hub_split} row {number}: {name} is "
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
    import numpy as np

    where = f"{copy.config}/{hub_split}"
    if copy.labels is None:
        if any(value is None for value in ids):
            raise BadHubData(f"{where} has rows without a score")
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


def fetch(task, hub: HubRepo, work_dir: Path) -> tuple[Path, str]:
    """Write the task's GLUE-layout files into work_dir/<folder> from the hub; returns the
    folder and how the source is named (the resolved commit, for a paper's record)."""
    if task.hub is None:
        raise UserError(f"--task {task.name} has no copy on the hub in the task table: "
                        f"use --source glue")
    root, described = snapshot(hub, task.hub)
    folder = work_dir / task.folder
    folder.mkdir()
    try:
        for split, (name, layout) in task.files.items():
            columns = read_hub_split(root, task.hub, split, layout.label is not None)
            write_glue_layout(columns, task.hub, layout, folder / name)
    except BadHubData as problem:
        raise UserError(f"{described}: {problem}; pass --hub_repo or --revision of a copy "
                        f"laid out as {HUB_REPO}, or use --source glue") from None
    (folder / RECORD).write_text(json.dumps(
        {"source": "hub", "repo": hub.repo, "revision": hub.revision,
         "commit": None if hub.folder is not None else root.name}, indent=1) + "\n")
    return folder, described
