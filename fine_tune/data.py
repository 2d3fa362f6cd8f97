"""GLUE files: the reader (layouts come from fine_tune.glue) and a token-id cache.

GLUE's files are tab-separated and have *no quoting*: sentences contain quote
characters, so any CSV quoting rule would merge or split rows.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fine_tune.errors import UserError
from fine_tune.io import atomic_torch_save, first_line
from fine_tune.progress import progress

from fine_tune.glue import (LABEL_TO_ID, LABELED_SPLITS, LABELS, MNLI, NUM_CLASSES,  # noqa: F401
                            SPLITS, SUBMISSION_FILES, TASK_DIRS, TASKS, TEST_SPLITS, Layout,
                            get_task)

# MNLI's column layouts by file kind (the demo uses them).
COLUMNS = {kind: list(MNLI.files[split][1].header)
           for kind, split in (("train", "train"), ("dev", "dev_matched"), ("test", "test_matched"))}
GLUE_MNLI_URL = "https://dl.fbaipublicfiles.com/glue/data/MNLI.zip"
DOWNLOAD_COMMAND = "python -m fine_tune.download"


def layout_of(split: str) -> str:
    """MNLI's file kind of a split: train, dev or test."""
    return "train" if split == "train" else split.split("_")[0]


def task_file(task: str, split: str) -> tuple:
    """(file name, Layout) of a task's split, or one line naming the splits it has."""
    entry = get_task(task)
    if split not in entry.files:
        raise UserError(f"--task {task} has no split {split!r}; its splits are "
                        f"{', '.join(entry.files)}: pick one with --dataset")
    return entry.files[split]


def split_path(data_dir, task: str, split: str) -> Path:
    return Path(data_dir) / get_task(task).folder / task_file(task, split)[0]


def missing_file(path: Path, task: str, data_dir) -> UserError:
    return UserError(f"{path} not found: download {get_task(task).folder} with "
                     f"`{DOWNLOAD_COMMAND} --data_dir {data_dir} --task {task}`")


@dataclass
class Examples:
    """The parsed rows of one split: the text(s), GLUE's index (for submission files) and
    the labels (class ids, or float scores for a regression task; None for test splits).
    `hypothesis` is None for single-sentence tasks."""
    index: list
    premise: list
    hypothesis: list | None
    labels: np.ndarray | None


def read_split(data_dir, task: str, split: str) -> Examples:
    path = split_path(data_dir, task, split)
    if not path.is_file():
        raise missing_file(path, task, data_dir)
    return read_tsv(path, task_file(task, split)[1], get_task(task).labels)


def _mnli_layout(kind: str) -> Layout:
    return MNLI.files[{"train": "train", "dev": "dev_matched", "test": "test_matched"}[kind]][1]


def read_tsv(path, layout, labels=LABELS) -> Examples:
    """Parse one GLUE file (`layout`: a Layout, or MNLI's file kind 'train'/'dev'/'test').
    `labels` are the task's class names as the file writes them; None parses float scores.
    Plain line splitting (not a CSV dialect) because the format has no quoting, and a row
    with a missing or extra field must name its line."""
    if isinstance(layout, str):
        layout = _mnli_layout(layout)
    try:
        # utf-8-sig: a byte-order mark (as some editors and Excel write) is not part of the header
        with open(path, encoding="utf-8-sig", newline="\n") as file:
            lines = file.read().split("\n")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error}); download it again") from None
    while lines and not lines[-1].strip():  # blank lines at the end (an editor's, say)
        lines.pop()
    if not lines:
        raise UserError(f"{path} is empty: download it again with `{DOWNLOAD_COMMAND}`")
    first = 1
    if layout.header is not None:
        header = lines[0].rstrip("\r").split("\t")
        if header != list(layout.header):
            raise UserError(f"{path}: header has columns {header}, expected GLUE's "
                            f"{list(layout.header)}")
        if len(lines) == 1:
            raise UserError(f"{path} has a header but no rows: download it again with "
                            f"`{DOWNLOAD_COMMAND}`")
        first = 2
    rows = []
    for number, line in enumerate(lines[first - 1:], start=first):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != layout.width:
            raise UserError(f"{path}:{number}: malformed row: expected {layout.width} "
                            f"tab-separated fields, found {len(fields)}")
        rows.append(fields)
    texts = [[row[column] for row in rows] for column in layout.text]
    index = ([row[layout.index] for row in rows] if layout.index is not None
             else [str(i) for i in range(len(rows))])
    return Examples(index, texts[0], texts[1] if len(texts) > 1 else None,
                    None if layout.label is None else _labels(path, rows, layout.label, labels, first))


def _labels(path, rows, column: int, labels, first_line: int) -> np.ndarray:
    """Class ids through the task's label list, or float scores (labels None)."""
    if labels is None:
        try:
            return np.asarray([float(row[column]) for row in rows], dtype=np.float32)
        except ValueError:
            number = next(n for n, row in enumerate(rows, start=first_line)
                          if not _is_float(row[column]))
            raise UserError(f"{path}:{number}: score {rows[number - first_line][column]!r} is "
                            "not a number") from None
    ids = {label: i for i, label in enumerate(labels)}
    out = []
    for number, row in enumerate(rows, start=first_line):
        if row[column] not in ids:
            raise UserError(f"{path}:{number}: unknown label {row[column]!r}; expected one of "
                            f"{', '.join(labels)}")
        out.append(ids[row[column]])
    return np.asarray(out, dtype=np.int64)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class TokenizedSplit:
    """Token ids of one split, padded to max_seq_len, ready to index by batch."""
    input_ids: torch.Tensor       # int32 [N, max_seq_len]
    token_type_ids: torch.Tensor  # int8  [N, max_seq_len]
    lengths: torch.Tensor         # int16 [N], real tokens per example
    labels: torch.Tensor | None   # int64 [N] class ids, or float32 [N] scores (regression)
    index: list                   # GLUE's `index` column, for submission files

    def __len__(self):
        return len(self.lengths)

    def batch(self, rows: torch.Tensor, trim: bool = False, multiple: int = 8) -> dict:
        """The model inputs of `rows`; `trim` cuts padding beyond the longest row (rounded
        up to `multiple`: see `pad_multiple`), which leaves a BERT classifier's outputs
        unchanged (padding is masked)."""
        lengths = self.lengths[rows].long()
        width = self.input_ids.shape[1]
        if trim:
            width = min(width, -(-int(lengths.max()) // multiple) * multiple)
        positions = torch.arange(width)
        batch = {
            "input_ids": self.input_ids[rows, :width].long(),
            "token_type_ids": self.token_type_ids[rows, :width].long(),
            "attention_mask": (positions[None, :] < lengths[:, None]).long(),
        }
        if self.labels is not None:
            batch["labels"] = self.labels[rows]
        return batch


def pad_multiple(device: torch.device) -> int:
    """What a trimmed batch's width is rounded up to: a multiple of 8 on CUDA, where tensor
    cores want it; none on the CPU, where every padded column is computed for nothing
    (about 4% of a step at GLUE's pair lengths)."""
    return 8 if device.type == "cuda" else 1


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies everything about a tokenizer that changes the ids it produces."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = repr(sorted(tokenizer.get_vocab().items()))
    else:  # the serialised pipeline, minus the per-call padding/truncation settings it records
        pipeline = json.loads(backend.to_str())
        pipeline.pop("padding", None)
        pipeline.pop("truncation", None)
        text = json.dumps(pipeline, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_tokenized(data_dir, task: str, split: str, tokenizer, max_seq_len: int,
                   show_progress: bool = True) -> TokenizedSplit:
    """Tokenize a split once; later runs with the same file, tokenizer and length reuse
    the ids cached next to the data."""
    path = split_path(data_dir, task, split)
    if not path.is_file():
        raise missing_file(path, task, data_dir)
    stat = path.stat()
    key = f"{split}-{tokenizer_fingerprint(tokenizer)}-{max_seq_len}-{stat.st_size}-{stat.st_mtime_ns}"
    cache = path.parent / "cache" / f"{key}.pt"
    if cache.is_file():
        try:
            return TokenizedSplit(**torch.load(cache, weights_only=True))
        except Exception as error:  # a damaged cache is only a lost shortcut (io.first_line)
            print(f"warning: token cache {cache} is unreadable ({first_line(error)}); "
                  "tokenizing again")
    examples = read_split(data_dir, task, split)
    tokenized = tokenize(examples, tokenizer, max_seq_len, show_progress, desc=f"tokenize {split}")
    try:
        cache.parent.mkdir(exist_ok=True)
        atomic_torch_save(vars(tokenized), cache)
    except OSError as error:  # a read-only data folder only costs re-tokenizing next time
        print(f"warning: could not cache token ids in {cache.parent} ({error})")
    return tokenized


def tokenize(examples: Examples, tokenizer, max_seq_len: int, show_progress=False,
             desc="tokenize", chunk_size: int = 8192) -> TokenizedSplit:
    n = len(examples.premise)
    input_ids = torch.zeros(n, max_seq_len, dtype=torch.int32)
    token_type_ids = torch.zeros(n, max_seq_len, dtype=torch.int8)
    lengths = torch.zeros(n, dtype=torch.int16)
    for start in progress(range(0, n, chunk_size), desc=desc, disable=not show_progress,
                      unit="chunk", leave=False):
        stop = min(start + chunk_size, n)
        second = None if examples.hypothesis is None else examples.hypothesis[start:stop]
        encoded = tokenizer(examples.premise[start:stop], second,
                            truncation=True, max_length=max_seq_len, padding="max_length",
                            return_tensors="np", return_token_type_ids=True,
                            return_attention_mask=True)
        input_ids[start:stop] = torch.from_numpy(encoded["input_ids"].astype(np.int32))
        token_type_ids[start:stop] = torch.from_numpy(encoded["token_type_ids"].astype(np.int8))
        lengths[start:stop] = torch.from_numpy(encoded["attention_mask"].sum(axis=1).astype(np.int16))
    labels = None if examples.labels is None else torch.from_numpy(examples.labels)
    return TokenizedSplit(input_ids, token_type_ids, lengths, labels, list(examples.index))
