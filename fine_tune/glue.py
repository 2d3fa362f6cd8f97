"""The GLUE tasks: one entry per task in one table (TASKS_BY_NAME).

An entry says where the task's files are and how each is laid out (GLUE's own files, as
its archives unpack them: tab-separated, no quoting), its labels (or that it is a
regression), its metrics and its submission files. The reader, evaluation, prediction
and the losses read it; adding a GLUE-format task is one entry here.

Plain data with no heavy imports, so that the command-line parsers (and `--help`)
load in a fraction of a second, before torch and transformers are imported.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """One kind of file: its header (None: no header row, as CoLA's train and dev files),
    its number of fields, and the columns holding the text(s), the gold label and the
    index that submission files repeat (None: the row's position, from 0)."""
    header: tuple[str, ...] | None
    width: int
    text: tuple[int, ...]
    label: int | None = None
    index: int | None = None

    @classmethod
    def of(cls, header: str, text: str, label: str | None = None, index: str | None = "index"):
        """A layout from its header (names separated by '|') and the names of its columns;
        the index column is 'index' where the file has one."""
        names = tuple(header.split("|"))
        index = index if index in names else None
        return cls(names, len(names), tuple(names.index(t) for t in text.split("|")),
                   None if label is None else names.index(label),
                   None if index is None else names.index(index))


@dataclass(frozen=True)
class HubCopy:
    """Where a Hugging Face hub repository laid out as nyu-mll/glue keeps the task (parquet
    files <config>/<split>-*.parquet with columns <text...>, label, idx) and how its rows
    become GLUE's: `splits` maps our split names to the hub's, `text` names the hub's text
    columns in the order of the Layout's text columns, and `labels` maps each class name the
    hub publishes to the label as GLUE's files write it (None: a regression's float score).
    The hub's class ids are read through its published names, never by position."""
    config: str
    text: tuple[str, ...]
    labels: dict | None
    splits: dict


def _hub(config: str, text: str, labels: dict | None, **splits: str) -> HubCopy:
    """train/validation/test as most tasks name them on the hub; `splits` adds or renames."""
    named = splits or {"train": "train", "dev": "validation", "test": "test"}
    return HubCopy(config, tuple(text.split("|")), labels, named)


@dataclass(frozen=True)
class Task:
    name: str                      # --task
    folder: str                    # data/fine_tune/<folder>/
    files: dict                    # split -> (file name, Layout)
    rows: dict                     # split -> rows of GLUE's release (header excluded)
    labels: tuple | None           # class names as the files write them; None: regression
    metrics: tuple                 # dev metrics; the first picks the best checkpoint
    submissions: dict              # test split -> GLUE submission file name
    model_task: str = ""           # the task whose models predict this one (AX: mnli)
    url: str = ""                  # where GLUE's download script gets it (fine_tune.download)
    source: str = "zip"            # what the url holds: a zip, one file, or MRPC's sources
    hub: HubCopy | None = None     # the same rows on the Hugging Face hub (--source hub)

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels is not None else 1

    @property
    def regression(self) -> bool:
        return self.labels is None

    @property
    def trained_as(self) -> str:
        return self.model_task or self.name

    def labelled_splits(self) -> tuple:
        return tuple(split for split, (_, layout) in self.files.items() if layout.label is not None)

    def test_splits(self) -> tuple:
        return tuple(split for split, (_, layout) in self.files.items() if layout.label is None)


def _standard(header: str, text: str, label: str, index: str = "index", test_header=None):
    """train/dev with a label column, test without it, as most GLUE tasks lay them out."""
    test_header = test_header or "|".join(n for n in header.split("|") if n != label)
    labelled = Layout.of(header, text, label)
    return {"train": ("train.tsv", labelled), "dev": ("dev.tsv", labelled),
            "test": ("test.tsv", Layout.of(test_header, text, index=index))}


GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
_MNLI_COMMON = ("index|promptID|pairID|genre|sentence1_binary_parse|sentence2_binary_parse|"
                "sentence1_parse|sentence2_parse|sentence1|sentence2")
_MNLI_TRAIN = Layout.of(_MNLI_COMMON + "|label1|gold_label", "sentence1|sentence2", "gold_label")
_MNLI_DEV = Layout.of(_MNLI_COMMON + "|label1|label2|label3|label4|label5|gold_label",
                      "sentence1|sentence2", "gold_label")
_MNLI_TEST = Layout.of(_MNLI_COMMON, "sentence1|sentence2", index="index")
MNLI_LABELS = ("contradiction", "entailment", "neutral")
_ENTAILMENT = ("entailment", "not_entailment")
_BINARY = ("0", "1")
# The hub's class names (nyu-mll/glue's dataset card) -> the labels GLUE's files write.
_HUB_NLI = {name: name for name in MNLI_LABELS}
_HUB_ENTAILMENT = {name: name for name in _ENTAILMENT}
_STSB = "index|genre|filename|year|old_index|source1|source2|sentence1|sentence2"

TASKS_BY_NAME = {task.name: task for task in (
    Task("mnli", "MNLI",
         files={"train": ("train.tsv", _MNLI_TRAIN),
                "dev_matched": ("dev_matched.tsv", _MNLI_DEV),
                "dev_mismatched": ("dev_mismatched.tsv", _MNLI_DEV),
                "test_matched": ("test_matched.tsv", _MNLI_TEST),
                "test_mismatched": ("test_mismatched.tsv", _MNLI_TEST)},
         rows={"train": 392702, "dev_matched": 9815, "dev_mismatched": 9832,
               "test_matched": 9796, "test_mismatched": 9847},
         labels=MNLI_LABELS, metrics=("accuracy", "macro_f1"),
         submissions={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
         url=GLUE_URL + "MNLI.zip",
         hub=_hub("mnli", "premise|hypothesis", _HUB_NLI, train="train",
                  dev_matched="validation_matched", dev_mismatched="validation_mismatched",
                  test_matched="test_matched", test_mismatched="test_mismatched")),
    Task("ax", "diagnostic",
         files={"test": ("diagnostic.tsv", Layout.of("index|sentence1|sentence2",
                                                      "sentence1|sentence2", index="index"))},
         rows={"test": 1104}, labels=MNLI_LABELS, metrics=(), submissions={"test": "AX.tsv"},
         model_task="mnli", url=GLUE_URL + "AX.tsv", source="file",
         hub=_hub("ax", "premise|hypothesis", _HUB_NLI, test="test")),
    Task("qnli", "QNLI", _standard("index|question|sentence|label", "question|sentence", "label"),
         rows={"train": 104743, "dev": 5463, "test": 5463}, labels=_ENTAILMENT,
         metrics=("accuracy",), submissions={"test": "QNLI.tsv"},
         url=GLUE_URL + "QNLIv2.zip", hub=_hub("qnli", "question|sentence", _HUB_ENTAILMENT)),
    Task("qqp", "QQP", _standard("id|qid1|qid2|question1|question2|is_duplicate",
                                 "question1|question2", "is_duplicate", index="id",
                                 test_header="id|question1|question2"),
         rows={"train": 363846, "dev": 40430, "test": 390965}, labels=_BINARY,
         metrics=("f1", "accuracy"), submissions={"test": "QQP.tsv"},
         url=GLUE_URL + "QQP-clean.zip",
         hub=_hub("qqp", "question1|question2", {"not_duplicate": "0", "duplicate": "1"})),
    Task("sst2", "SST-2", _standard("sentence|label", "sentence", "label",
                                    test_header="index|sentence"),
         rows={"train": 67349, "dev": 872, "test": 1821}, labels=_BINARY,
         metrics=("accuracy",), submissions={"test": "SST-2.tsv"}, url=GLUE_URL + "SST-2.zip",
         hub=_hub("sst2", "sentence", {"negative": "0", "positive": "1"})),
    Task("mrpc", "MRPC", _standard("Quality|#1 ID|#2 ID|#1 String|#2 String", "#1 String|#2 String",
                                   "Quality", test_header="index|#1 ID|#2 ID|#1 String|#2 String"),
         rows={"train": 3668, "dev": 408, "test": 1725}, labels=_BINARY,
         metrics=("f1", "accuracy"), submissions={"test": "MRPC.tsv"},
         # built from the MSR paraphrase files as GLUE's script does (fine_tune.download)
         url="https://dl.fbaipublicfiles.com/senteval/senteval_data/", source="mrpc",
         hub=_hub("mrpc", "sentence1|sentence2", {"not_equivalent": "0", "equivalent": "1"})),
    Task("rte", "RTE", _standard("index|sentence1|sentence2|label", "sentence1|sentence2", "label"),
         rows={"train": 2490, "dev": 277, "test": 3000}, labels=_ENTAILMENT,
         metrics=("accuracy",), submissions={"test": "RTE.tsv"}, url=GLUE_URL + "RTE.zip",
         hub=_hub("rte", "sentence1|sentence2", _HUB_ENTAILMENT)),
    Task("cola", "CoLA",
         files={"train": ("train.tsv", Layout(None, 4, text=(3,), label=1)),
                "dev": ("dev.tsv", Layout(None, 4, text=(3,), label=1)),
                "test": ("test.tsv", Layout.of("index|sentence", "sentence", index="index"))},
         rows={"train": 8551, "dev": 1043, "test": 1063}, labels=_BINARY,
         metrics=("mcc",), submissions={"test": "CoLA.tsv"}, url=GLUE_URL + "CoLA.zip",
         hub=_hub("cola", "sentence", {"unacceptable": "0", "acceptable": "1"})),
    Task("stsb", "STS-B", _standard(_STSB + "|score", "sentence1|sentence2", "score"),
         rows={"train": 5749, "dev": 1500, "test": 1379}, labels=None,
         metrics=("pearson", "spearman"), submissions={"test": "STS-B.tsv"},
         url=GLUE_URL + "STS-B.zip", hub=_hub("stsb", "sentence1|sentence2", None)),
    Task("wnli", "WNLI", _standard("index|sentence1|sentence2|label", "sentence1|sentence2", "label"),
         rows={"train": 635, "dev": 71, "test": 146}, labels=_BINARY,
         metrics=("accuracy",), submissions={"test": "WNLI.tsv"}, url=GLUE_URL + "WNLI.zip",
         hub=_hub("wnli", "sentence1|sentence2", {"not_entailment": "0", "entailment": "1"})),
)}
TASKS = tuple(TASKS_BY_NAME)
TRAINABLE_TASKS = tuple(name for name, task in TASKS_BY_NAME.items() if not task.model_task)
# Every split name any task has (the parsers' choices; each task's own are checked later).
LABELED_SPLITS = tuple(dict.fromkeys(s for t in TASKS_BY_NAME.values() for s in t.labelled_splits()))
TEST_SPLITS = tuple(dict.fromkeys(s for t in TASKS_BY_NAME.values() for s in t.test_splits()))
NUM_CLASSES = {name: task.num_labels for name, task in TASKS_BY_NAME.items()}


def get_task(name: str) -> Task:
    return TASKS_BY_NAME[name]


# MNLI's names, as the rest of the code and its tests have long used them.
MNLI = TASKS_BY_NAME["mnli"]
TASK_DIRS = {name: task.folder for name, task in TASKS_BY_NAME.items()}
LABELS = MNLI_LABELS
LABEL_TO_ID = {label: i for i, label in enumerate(LABELS)}
SPLITS = tuple(MNLI.files)
SUBMISSION_FILES = MNLI.submissions
