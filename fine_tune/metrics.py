"""Every dev metric a task may name (fine_tune.glue), from gold and predicted values: class
ids (f1 is for the class "1", as GLUE scores MRPC and QQP) or scores. No torch here: the
evaluation and the tests of fine_tune.compare's vectorised versions use the same calls.
scikit-learn is imported at the first score, not with this module: it takes about a
second, which every training process would otherwise pay before its first step."""
import pandas as pd


def _sklearn(name: str, **options):
    def metric(gold, predicted):
        from sklearn import metrics
        return getattr(metrics, name)(gold, predicted, **options)
    metric.__name__ = name
    return metric


METRICS = {
    "accuracy": _sklearn("accuracy_score"),
    "macro_f1": _sklearn("f1_score", average="macro"),
    "f1": _sklearn("f1_score", pos_label=1, zero_division=0.0),
    "mcc": _sklearn("matthews_corrcoef"),
    "pearson": lambda gold, predicted: pd.Series(gold).corr(pd.Series(predicted), "pearson"),
    "spearman": lambda gold, predicted: pd.Series(gold).corr(pd.Series(predicted), "spearman"),
}
