"""GLUE MNLI files: layout, reader, and a token-id cache.

GLUE's MNLI files are tab-separated with a header row and *no quoting*: sentences
contain quote characters, so any CSV quoting rule would merge or split rows.
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

from fine_tune.glue import (LABEL_TO_ID, LABELED_SPLITS, LABELS, NUM_CLASSES,  # noqa: F401
                            SPLITS, SUBMISSION_FILES, TASK_DIRS, TASKS, TEST_SPLITS)

# Row counts of the official GLUE release (header excluded).
EXPECTED_ROWS = {
    "train": 392702,
    "dev_matched": 9815,
    "dev_mismatched": 9832,
    "test_matched": 9796,
    "test_mismatched": 9847,
}
# Column layout of each file kind.
_COMMON = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
           "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
           "sentence1", "sentence2"]
COLUMNS = {
    "train": _COMMON + ["label1", "gold_label"],
    "dev": _COMMON + ["label1", "label2", "label3", "label4", "label5", "gold_label"],
    "test": _COMMON,
}
GLUE_MNLI_URL = "https://dl.fbaipublicfiles.com/glue/data/MNLI.zip"
DOWNLOAD_COMMAND = "python -m fine_tune.download"


def layout_of(split: str) -> str:
    return "train" if split == "train" else split.split("_")[0]


def split_path(data_dir, task: str, split: str) -> Path:
    return Path(data_dir) / TASK_DIRS[task] / f"{split}.tsv"


@dataclass
class Examples:
    """The parsed rows of one split; labels are None for test splits."""
    index: list
    premise: list
    hypothesis: list
    labels: np.ndarray | None


def read_split(data_dir, task: str, split: str) -> Examples:
    path = split_path(data_dir, task, split)
    if not path.is_file():
        raise UserError(
            f"{path} not found: download MNLI with `{DOWNLOAD_COMMAND} --data_dir {data_dir}`")
    return read_tsv(path, layout_of(split))


def read_tsv(path, layout: str) -> Examples:
    """Parse one GLUE file. Plain line splitting (not a CSV dialect) because the format
    has no quoting, and a row with a missing or extra field must name its line."""
    columns = COLUMNS[layout]
    try:
        # utf-8-sig: a byte-order mark (as some editors and Excel write) is not part of the header
        with open(path, encoding="utf-8-sig", newline="\n") as file:
            lines = file.read().split("\n")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error}); download it again with "
                        f"`{DOWNLOAD_COMMAND}`") from None
    while lines and not lines[-1].strip():  # blank lines at the end (an editor's, say)
        lines.pop()
    if not lines:
        raise UserError(f"{path} is empty: download it again with `{DOWNLOAD_COMMAND}`")
    header = lines[0].rstrip("\r").split("\t")
    if header != columns:
        raise UserError(f"{path}: header has columns {header}, expected the GLUE {layout} "
                        f"layout {columns}")
    if len(lines) == 1:
        raise UserError(f"{path} has a header but no rows: download it again with "
                        f"`{DOWNLOAD_COMMAND}`")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(columns):
            raise UserError(f"{path}:{number}: malformed row: expected {len(columns)} "
                            f"tab-separated fields, found {len(fields)}")
        rows.append(fields)
    index, premise, hypothesis = (
        [row[columns.index(name)] for row in rows] for name in ("index", "sentence1", "sentence2"))
    labels = None
    if layout != "test":
        ids = []
        for number, row in enumerate(rows, start=2):
            label = row[-1]
            if label not in LABEL_TO_ID:
                raise UserError(f"{path}:{number}: unknown label {label!r}; expected one of "
                                f"{', '.join(LABELS)}")
            ids.append(LABEL_TO_ID[label])
        labels = np.asarray(ids, dtype=np.int64)
    return Examples(index, premise, hypothesis, labels)


@dataclass
class TokenizedSplit:
    """Token ids of one split, padded to max_seq_len, ready to index by batch."""
    input_ids: torch.Tensor       # int32 [N, max_seq_len]
    token_type_ids: torch.Tensor  # int8  [N, max_seq_len]
    lengths: torch.Tensor         # int16 [N], real tokens per example
    labels: torch.Tensor | None   # int64 [N]
    index: list                   # GLUE's `index` column, for submission files

    def __len__(self):
        return len(self.lengths)

    def batch(self, rows: torch.Tensor, trim: bool = False) -> dict:
        """The model inputs of `rows`; `trim` cuts padding beyond the longest row, which
        leaves a BERT classifier's outputs unchanged (padding is masked)."""
        lengths = self.lengths[rows].long()
        width = self.input_ids.shape[1]
        if trim:
            width = min(width, -(-int(lengths.max()) // 8) * 8)  # multiple of 8 for tensor cores
        positions = torch.arange(width)
        batch = {
            "input_ids": self.input_ids[rows, :width].long(),
            "token_type_ids": self.token_type_ids[rows, :width].long(),
            "attention_mask": (positions[None, :] < lengths[:, None]).long(),
        }
        if self.labels is not None:
            batch["labels"] = self.labels[rows]
        return batch


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
        raise UserError(
            f"{path} not found: download MNLI with `{DOWNLOAD_COMMAND} --data_dir {data_dir}`")
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
        encoded = tokenizer(examples.premise[start:stop], examples.hypothesis[start:stop],
                            truncation=True, max_length=max_seq_len, padding="max_length",
                            return_tensors="np", return_token_type_ids=True,
                            return_attention_mask=True)
        input_ids[start:stop] = torch.from_numpy(encoded["input_ids"].astype(np.int32))
        token_type_ids[start:stop] = torch.from_numpy(encoded["token_type_ids"].astype(np.int8))
        lengths[start:stop] = torch.from_numpy(encoded["attention_mask"].sum(axis=1).astype(np.int16))
    labels = None if examples.labels is None else torch.from_numpy(examples.labels)
    return TokenizedSplit(input_ids, token_type_ids, lengths, labels, list(examples.index))
