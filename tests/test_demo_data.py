"""The demo MNLI files and tiny BERT: GLUE layout, determinism, learnability, offline loading."""
import collections
import os

import numpy as np
import pytest

from fine_tune.data import COLUMNS, LABELS, SPLITS, layout_of, read_split
from fine_tune.demo_data import (DEFAULT_SIZES, SPECIAL_TOKENS, demo_texts,
                                 learn_wordpiece_vocab, main, write_demo_mnli, write_tiny_bert)
from fine_tune.errors import UserError

MATCHED = ("train", "dev_matched", "test_matched")
MISMATCHED = ("dev_mismatched", "test_mismatched")
# GLUE's MNLI headers, spelled out here so a change to COLUMNS cannot hide a change here.
GLUE_HEADERS = {
    "train": "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
             "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label",
    "dev": "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
           "sentence1_parse sentence2_parse sentence1 sentence2 label1 label2 label3 label4 "
           "label5 gold_label",
    "test": "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
            "sentence1_parse sentence2_parse sentence1 sentence2",
}


def rows_of(data_dir, split):
    lines = (data_dir / "MNLI" / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:-1]]


def words(sentences):
    """The words of `sentences`, less the word after "in": the demo's made-up town names
    ("in belkato") are drawn afresh for every split."""
    found = set()
    for sentence in sentences:
        tokens = sentence.split()
        found.update(w for i, w in enumerate(tokens) if i == 0 or tokens[i - 1] != "in")
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    counts = write_demo_mnli(data_dir)
    return data_dir, counts


@pytest.fixture(scope="module")
def tiny_bert(demo, tmp_path_factory):
    data_dir, _ = demo
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", demo_texts(data_dir))


def test_default_sizes_are_written_and_parse(demo):
    data_dir, counts = demo
    assert counts == DEFAULT_SIZES == {"train": 6000, "dev_matched": 600, "dev_mismatched": 600,
                                       "test_matched": 500, "test_mismatched": 500}
    for split in SPLITS:
        examples = read_split(data_dir, "mnli", split)
        assert len(examples.premise) == len(examples.hypothesis) == counts[split]
        assert examples.index == [str(i) for i in range(counts[split])]
        if split.startswith("test"):
            assert examples.labels is None
        else:
            assert examples.labels.shape == (counts[split],)


def test_requested_sizes_and_unknown_split(tmp_path):
    sizes = {"train": 37, "dev_matched": 5, "dev_mismatched": 6, "test_matched": 7,
             "test_mismatched": 8}
    assert write_demo_mnli(tmp_path, sizes, seed=3) == sizes
    for split, n in sizes.items():
        assert len(read_split(tmp_path, "mnli", split).premise) == n
    # A partial dict keeps the defaults for the other splits.
    assert write_demo_mnli(tmp_path / "b", {"train": 11})["dev_matched"] == 600
    with pytest.raises(UserError, match="unknown split"):
        write_demo_mnli(tmp_path / "c", {"validation": 10})
    with pytest.raises(UserError, match="at least 1"):
        write_demo_mnli(tmp_path / "d", {"train": 0})


def test_headers_and_columns_are_glues(demo):
    data_dir, _ = demo
    for split in SPLITS:
        layout = layout_of(split)
        header, rows = rows_of(data_dir, split)
        assert header == GLUE_HEADERS[layout].split() == COLUMNS[layout]
        assert len(header) == {"train": 12, "dev": 16, "test": 10}[layout]
        for row in rows:
            assert len(row) == len(header)
            assert row["pairID"].startswith(row["promptID"]) and row["pairID"][-1] in "cen"
            assert row["promptID"].isdigit() and row["genre"]
            assert row["sentence1_binary_parse"].startswith("( ")
            assert row["sentence2_parse"].startswith("(ROOT")
            for sentence in ("sentence1", "sentence2"):
                assert 3 <= len(row[sentence].split()) <= 20
                # Every word of the sentence is in its parses, in order.
                parse_words = [t for t in row[f"{sentence}_binary_parse"].split()
                               if t not in "()"]
                assert parse_words == row[sentence].split()
        if layout != "test":
            for row in rows:
                assert row["pairID"][-1] == row["gold_label"][0]
        if layout == "dev":
            for row in rows:
                votes = [row[f"label{i}"] for i in range(1, 6)]
                assert set(votes) <= set(LABELS)
                assert votes.count(row["gold_label"]) >= 3
        if layout == "train":
            assert all(row["label1"] == row["gold_label"] for row in rows)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    sizes = {"train": 300, "dev_matched": 40, "dev_mismatched": 40, "test_matched": 30,
             "test_mismatched": 30}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_demo_mnli(tmp_path / name, sizes, seed=seed)
    for split in SPLITS:
        a, b, c = ((tmp_path / name / "MNLI" / f"{split}.tsv").read_bytes() for name in "abc")
        assert a == b
        assert a != c


def test_matched_and_mismatched_genres_and_vocabularies_differ(demo):
    data_dir, _ = demo
    genres = {split: {row["genre"] for row in rows_of(data_dir, split)[1]} for split in SPLITS}
    assert genres["train"] == genres["dev_matched"] == genres["test_matched"]
    assert genres["dev_mismatched"] == genres["test_mismatched"]
    assert len(genres["train"]) >= 3 and len(genres["dev_mismatched"]) >= 2
    assert not genres["train"] & genres["dev_mismatched"]

    def sentences(split):
        examples = read_split(data_dir, "mnli", split)
        return examples.premise + examples.hypothesis

    train_words = words(sentences("train"))
    for split in MATCHED[1:]:  # matched splits draw on the train vocabulary
        assert words(sentences(split)) <= train_words
    for split in MISMATCHED:  # mismatched genres bring many content words train never has
        unseen = words(sentences(split)) - train_words
        assert len(unseen) >= 50, sorted(unseen)
        assert {"weaver", "donor", "quilt", "auction"} <= unseen
    # ... while the function words that carry the label logic are shared.
    shared = words(sentences("dev_mismatched")) & train_words
    assert {"not", "nobody", "because", "is", "the"} <= shared


def test_labels_roughly_balanced(demo):
    data_dir, _ = demo
    for split in ("train", "dev_matched", "dev_mismatched"):
        labels = read_split(data_dir, "mnli", split).labels
        shares = np.bincount(labels, minlength=len(LABELS)) / len(labels)
        assert shares.min() > 0.28 and shares.max() < 0.39, (split, shares)


def test_quotes_survive_the_no_quoting_reader(demo):
    data_dir, _ = demo
    for split in SPLITS:
        examples = read_split(data_dir, "mnli", split)
        quoted = [s for s in examples.premise + examples.hypothesis if '"' in s]
        assert quoted, split
        # An opening quote without its closing one would mean a field was cut.
        assert all(s.count('"') % 2 == 0 for s in quoted)
    train = read_split(data_dir, "mnli", "train")
    assert any(" 's " in s for s in train.premise + train.hypothesis)


def test_hypotheses_of_all_labels_share_surface_forms(demo):
    """No single template or negation word gives the label away."""
    data_dir, _ = demo
    examples = read_split(data_dir, "mnli", "train")
    by_word = collections.defaultdict(set)
    for hypothesis, label in zip(examples.hypothesis, examples.labels):
        for word in set(hypothesis.split()):
            by_word[word].add(int(label))
    for cue in ("not", "is", "a", "because", "for", "with"):
        assert by_word[cue] == {0, 1, 2}, cue


def _fit_and_score(train_docs, train_labels, dev_docs, dev_labels, ngram_range=(1, 1)):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(token_pattern=r"\S+", ngram_range=ngram_range, binary=True)
    classifier = LogisticRegression(max_iter=2000, C=1.0)
    classifier.fit(vectorizer.fit_transform(train_docs), train_labels)
    return classifier.score(vectorizer.transform(dev_docs), dev_labels)


def _pair_features(premise, hypothesis):
    """Hypothesis n-grams plus which hypothesis words the premise lacks."""
    p = set(premise.split())
    missing = [f"MISSING_{w}" for w in hypothesis.split() if w not in p]
    return " ".join(hypothesis.split() + missing + [f"N_MISSING_{min(len(missing), 3)}"])


def test_labels_follow_from_the_wording_but_not_from_the_hypothesis_alone(demo):
    data_dir, _ = demo
    train = read_split(data_dir, "mnli", "train")
    dev = read_split(data_dir, "mnli", "dev_matched")
    chance = np.bincount(dev.labels).max() / len(dev.labels)

    pair = _fit_and_score([_pair_features(p, h) for p, h in zip(train.premise, train.hypothesis)],
                          train.labels,
                          [_pair_features(p, h) for p, h in zip(dev.premise, dev.hypothesis)],
                          dev.labels)
    hypothesis_only = _fit_and_score(train.hypothesis, train.labels, dev.hypothesis, dev.labels)
    assert pair > 0.5 and pair > chance + 0.15, pair
    assert hypothesis_only < 0.97, hypothesis_only
    # Reading the premise must help: the pair model beats the hypothesis-only one.
    assert pair > hypothesis_only + 0.03, (pair, hypothesis_only)


def test_tiny_bert_loads_offline_and_covers_the_data(demo, tiny_bert, monkeypatch):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data_dir, _ = demo
    assert {"config.json", "vocab.txt", "tokenizer_config.json"} <= set(os.listdir(tiny_bert))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    model = BertForSequenceClassification.from_pretrained(tiny_bert, num_labels=3,
                                                          local_files_only=True)
    assert tokenizer.pad_token_id == 0 and model.config.pad_token_id == 0
    assert tokenizer.unk_token == "[UNK]"
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[MASK]"]) == [2, 3, 4]
    assert model.config.vocab_size == len(tokenizer) <= 2000
    assert (model.config.hidden_size, model.config.num_hidden_layers,
            model.config.num_attention_heads, model.config.intermediate_size) == (64, 4, 2, 128)

    dev = read_split(data_dir, "mnli", "dev_mismatched")
    encoded = tokenizer(dev.premise[:2], dev.hypothesis[:2], padding=True, return_tensors="pt")
    ids = encoded["input_ids"]
    assert ids[0, 0] == tokenizer.cls_token_id
    assert set(encoded["token_type_ids"].unique().tolist()) == {0, 1}
    with torch.no_grad():
        logits = model(**encoded).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    # Lower-cased and split like BERT, and the pieces survive a round trip.
    assert tokenizer.tokenize('The MAN plays "fine" .') == ["the", "man", "plays", '"', "fine",
                                                           '"', "."]

    all_ids = tokenizer(dev.premise, dev.hypothesis)["input_ids"]
    total = sum(len(row) for row in all_ids)
    unknown = sum(row.count(tokenizer.unk_token_id) for row in all_ids)
    assert unknown / total < 0.05, unknown / total
    longest = max(len(row) for row in tokenizer(read_split(data_dir, "mnli", "train").premise,
                                                read_split(data_dir, "mnli", "train").hypothesis)
                  ["input_ids"])
    assert longest <= 64


def test_wordpiece_vocabulary():
    texts = ["The cat sat .", "the cat ran", "a cat", "The CATS sat"] * 3
    vocab = learn_wordpiece_vocab(texts, vocab_size=2000)
    assert vocab[:5] == SPECIAL_TOKENS == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(vocab) == len(set(vocab))
    assert {"the", "cat", "sat", "ran", "cats", "z", "##z", "7"} <= set(vocab)  # lower-cased
    assert vocab == learn_wordpiece_vocab(list(reversed(texts)), vocab_size=2000)
    small = learn_wordpiece_vocab(texts, vocab_size=len(vocab) - 2)
    assert len(small) == len(vocab) - 2 and small == vocab[:-2]


def test_tiny_bert_is_deterministic(demo, tiny_bert, tmp_path):
    import torch
    from transformers import BertModel

    data_dir, _ = demo
    texts = demo_texts(data_dir)
    train = read_split(data_dir, "mnli", "train")
    assert texts == train.premise + train.hypothesis
    state = torch.get_rng_state()
    again = write_tiny_bert(tmp_path / "again", texts)
    other = write_tiny_bert(tmp_path / "other", texts, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert (again / "vocab.txt").read_bytes() == (tiny_bert / "vocab.txt").read_bytes()
    a, b, c = (BertModel.from_pretrained(folder).state_dict() for folder in (tiny_bert, again, other))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embeddings.word_embeddings.weight"],
                           c["embeddings.word_embeddings.weight"])


def test_command_line_writes_data_and_model(tmp_path, capsys):
    from transformers import AutoTokenizer

    main(["--data_dir", str(tmp_path / "data"), "--model_dir", str(tmp_path / "model"),
          "--train_size", "200", "--dev_matched_size", "20", "--dev_mismatched_size", "21",
          "--test_matched_size", "22", "--test_mismatched_size", "23", "--hidden_size", "32"])
    assert "train 200" in capsys.readouterr().out
    assert len(read_split(tmp_path / "data", "mnli", "test_mismatched").premise) == 23
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model", local_files_only=True)
    assert "the" in tokenizer.get_vocab()
    with pytest.raises(UserError, match="multiple"):
        main(["--data_dir", str(tmp_path / "d2"), "--model_dir", str(tmp_path / "m2"),
              "--hidden_size", "33"])
