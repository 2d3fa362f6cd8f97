"""GLUE task constants: names, splits, labels and submission files.

Plain data with no heavy imports, so that the command-line parsers (and `--help`)
load in a fraction of a second, before torch and transformers are imported.
"""
TASKS = ("mnli",)
TASK_DIRS = {"mnli": "MNLI"}
# One label map, used for training, evaluation and submission files alike.
LABELS = ("contradiction", "entailment", "neutral")
LABEL_TO_ID = {label: i for i, label in enumerate(LABELS)}
NUM_CLASSES = {"mnli": len(LABELS)}

SPLITS = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
LABELED_SPLITS = SPLITS[:3]
TEST_SPLITS = SPLITS[3:]
SUBMISSION_FILES = {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}
