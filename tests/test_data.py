"""The GLUE MNLI reader on each file layout, and the token-id cache."""
import pytest
import torch

from fine_tune.data import COLUMNS, LABELS, load_tokenized, read_split, read_tsv
from fine_tune.errors import UserError
from fine_tune.modeling import load_tokenizer

QUOTED = 'He said "no way" and left \'quickly'


def write(path, layout, rows):
    lines = ["\t".join(COLUMNS[layout])] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(layout, index, premise, hypothesis, label="neutral"):
    fields = [str(index), "31193", f"{index}n", "fiction", "( x )", "( y )", "(S x)", "(S y)",
              premise, hypothesis]
    if layout == "train":
        fields += [label, label]
    elif layout == "dev":
        fields += [label, "entailment", label, label, "contradiction", label]
    return fields


@pytest.mark.parametrize("layout", ["train", "dev", "test"])
def test_each_layout_reads_sentences_with_quotes_verbatim(tmp_path, layout):
    rows = [row(layout, 0, QUOTED, 'a "quoted" hypothesis', "contradiction"),
            row(layout, 7, "plain premise", '"', "neutral"),
            row(layout, 9, "n/a", "NaN", "entailment")]
    examples = read_tsv(write(tmp_path / "f.tsv", layout, rows), layout)
    assert examples.premise == [QUOTED, "plain premise", "n/a"]
    assert examples.hypothesis == ['a "quoted" hypothesis', '"', "NaN"]
    assert examples.index == ["0", "7", "9"]
    if layout == "test":
        assert examples.labels is None
    else:  # gold_label, the last column, through the one label map
        assert examples.labels.tolist() == [LABELS.index("contradiction"), LABELS.index("neutral"),
                                            LABELS.index("entailment")]


@pytest.mark.parametrize("extra", [1, -1])
def test_malformed_row_names_file_and_line(tmp_path, extra):
    rows = [row("train", i, "p", "h") for i in range(5)]
    rows[3] = rows[3] + ["surplus"] if extra > 0 else rows[3][:-1]
    path = write(tmp_path / "train.tsv", "train", rows)
    with pytest.raises(UserError, match=rf"{path}:5: malformed row: expected 12 tab-separated fields, "
                                        rf"found {12 + extra}"):
        read_tsv(path, "train")


def test_blank_lines_at_the_end_are_ignored_but_not_in_the_middle(tmp_path):
    rows = [row("train", i, "p", "h") for i in range(3)]
    path = write(tmp_path / "train.tsv", "train", rows)
    path.write_text(path.read_text() + "\n\n")
    assert len(read_tsv(path, "train").premise) == 3
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n")
    with pytest.raises(UserError, match=rf"{path}:3: malformed row"):
        read_tsv(path, "train")


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    """Files saved by some editors (and Excel) start with a UTF-8 byte-order mark."""
    path = write(tmp_path / "train.tsv", "train", [row("train", 0, "p", "h", "entailment")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    examples = read_tsv(path, "train")
    assert examples.index == ["0"] and examples.labels.tolist() == [LABELS.index("entailment")]


def test_unknown_label_names_the_label_and_line(tmp_path):
    rows = [row("dev", 0, "p", "h"), row("dev", 1, "p", "h", label="-")]
    path = write(tmp_path / "dev.tsv", "dev", rows)
    with pytest.raises(UserError, match=rf"{path}:3: unknown label '-'; expected one of "
                                        "contradiction, entailment, neutral"):
        read_tsv(path, "dev")


def test_wrong_layout_and_empty_files(tmp_path):
    path = write(tmp_path / "x.tsv", "test", [row("test", 0, "p", "h")])
    with pytest.raises(UserError, match="header has columns .*, expected GLUE's \\['index', 'promptID'"):
        read_tsv(path, "train")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(UserError, match="is empty"):
        read_tsv(tmp_path / "empty.tsv", "test")
    write(tmp_path / "header.tsv", "test", [])
    with pytest.raises(UserError, match="has a header but no rows"):
        read_tsv(tmp_path / "header.tsv", "test")


def test_missing_split_prints_the_download_command(tmp_path):
    with pytest.raises(UserError, match=r"MNLI/dev_matched.tsv not found: download MNLI with "
                                        r"`python -m fine_tune.download --data_dir"):
        read_split(tmp_path, "mnli", "dev_matched")


def test_token_ids_are_cached_per_tokenizer_and_length(workdir):
    data_dir = workdir / "data" / "fine_tune"
    tokenizer = load_tokenizer(workdir / "tiny-bert")
    first = load_tokenized(data_dir, "mnli", "dev_matched", tokenizer, 32, show_progress=False)
    caches = sorted((data_dir / "MNLI" / "cache").glob("dev_matched-*-32-*.pt"))
    assert len(caches) == 1
    again = load_tokenized(data_dir, "mnli", "dev_matched", tokenizer, 32, show_progress=False)
    assert torch.equal(first.input_ids, again.input_ids) and first.index == again.index
    # The ids are the tokenizer's own, padded/truncated to max_seq_len.
    examples = read_split(data_dir, "mnli", "dev_matched")
    direct = tokenizer(examples.premise[0], examples.hypothesis[0], truncation=True, max_length=32)
    assert first.input_ids[0, :first.lengths[0]].tolist() == direct["input_ids"]
    assert first.input_ids[0, first.lengths[0]:].eq(tokenizer.pad_token_id).all()
    # Another length is another cache entry; a changed file invalidates its entry.
    load_tokenized(data_dir, "mnli", "dev_matched", tokenizer, 48, show_progress=False)
    assert len(list((data_dir / "MNLI" / "cache").glob("dev_matched-*.pt"))) == 2
    path = data_dir / "MNLI" / "dev_matched.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5]) + "\n")
    assert len(load_tokenized(data_dir, "mnli", "dev_matched", tokenizer, 32, show_progress=False)) == 4


def test_trimmed_batch_keeps_every_real_token(workdir):
    tokenizer = load_tokenizer(workdir / "tiny-bert")
    data = load_tokenized(workdir / "data" / "fine_tune", "mnli", "train", tokenizer, 128,
                          show_progress=False)
    rows = torch.arange(10)
    full, trimmed = data.batch(rows), data.batch(rows, trim=True)
    width = trimmed["input_ids"].shape[1]
    assert width % 8 == 0 and width >= int(data.lengths[rows].max()) and width < 128
    assert torch.equal(full["input_ids"][:, :width], trimmed["input_ids"])
    assert full["attention_mask"][:, width:].sum() == 0
    assert torch.equal(trimmed["attention_mask"].sum(1), data.lengths[rows].long())
