"""Every dev metric a task may name (fine_tune.glue), from gold and predicted values: class
ids (f1 is for the class "1", as GLUE scores MRPC and QQP) or scores. No torch here: the
evaluation and the tests of fine_tune.compare's vectorised versions use the same calls."""
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRICS = {
    "accuracy": accuracy_score,
    "macro_f1": lambda gold, predicted: f1_score(gold, predicted, average="macro"),
    "f1": lambda gold, predicted: f1_score(gold, predicted, pos_label=1, zero_division=0.0),
    "mcc": matthews_corrcoef,
    "pearson": lambda gold, predicted: pd.Series(gold).corr(pd.Series(predicted), "pearson"),
    "spearman": lambda gold, predicted: pd.Series(gold).corr(pd.Series(predicted), "spearman"),
}
