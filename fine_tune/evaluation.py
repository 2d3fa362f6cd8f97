"""Evaluation of every checkpoint, and GLUE submission files.

Both read only the experiment folder (config, architecture, tokenizer, checkpoints),
so the same commands serve teachers and students.
"""
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.tensorboard import SummaryWriter

import sys

from fine_tune.data import LABEL_TO_ID, LABELS, SUBMISSION_FILES, TokenizedSplit, load_tokenized
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment
from fine_tune.progress import interactive, progress
from fine_tune.modeling import (autocast, load_architecture, load_experiment_tokenizer,
                                prepared_attention_mask, resolve_device)


@torch.inference_mode()
def predict(model, data: TokenizedSplit, batch_size: int, device: torch.device,
            desc: str = "predict", amp: bool = False) -> np.ndarray:
    """Predicted class ids in file order. Examples are batched by length and each batch is
    cut to its longest example: padding is masked, so the logits do not change."""
    model.eval()
    order = torch.argsort(data.lengths.long(), stable=True)
    predictions = torch.empty(len(data), dtype=torch.long)
    for rows in progress(order.split(batch_size), desc=desc, unit="batch", leave=False):
        batch = data.batch(rows, trim=True)
        batch.pop("labels", None)
        with autocast([device], amp):
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**prepared_attention_mask(inputs)).logits
        predictions[rows] = logits.argmax(dim=-1).cpu()
    return predictions.numpy()


def model_labels(model) -> np.ndarray:
    """Our label id of each of the model's class ids, read from the model's own id2label
    (a model saved with another class order is scored and submitted correctly)."""
    id2label = {int(i): label for i, label in model.config.id2label.items()}
    names = [id2label[i] for i in range(model.config.num_labels)]
    if set(names) != set(LABELS):
        raise UserError(f"the model's labels {names} are not the task's {list(LABELS)}: its "
                        "model_config.json id2label is wrong")
    return np.array([LABEL_TO_ID[name] for name in names])


def _load(args, output: str, step=None):
    """The experiment, its model (weights not yet loaded), the split's token ids, the device.
    `output` (relative to the experiment) must be writable before anything is computed."""
    experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task).require()
    config = experiment.config()
    steps = experiment.checkpoint_steps()
    if not steps:
        raise UserError(f"{experiment.describe_checkpoints(steps)}, or wait for its first "
                        "--ckpt_step")
    if step is not None and step not in steps:
        raise UserError(f"{experiment.checkpoint_path(step)} not found; "
                        f"{experiment.describe_checkpoints(steps)}: pick one with --ckpt")
    device = resolve_device(args.device_id)
    tokenizer = load_experiment_tokenizer(experiment)
    model = load_architecture(experiment).to(device)
    experiment.check_writable(output)
    data = load_tokenized(args.data_dir, args.task, args.dataset, tokenizer, config["max_seq_len"])
    return experiment, model, data, device, steps


def evaluate_checkpoints(args) -> pd.DataFrame:
    results_file = f"results_{args.dataset}.csv"
    experiment, model, data, device, steps = _load(args, results_file)
    labels = model_labels(model)
    rows = []
    for step in progress(steps, desc=f"evaluate {args.dataset}", unit="ckpt"):
        model.load_state_dict(experiment.load_checkpoint(step))
        predicted = labels[predict(model, data, args.batch_size, device, desc=f"model-{step}",
                                   amp=args.amp == "bf16")]
        gold = data.labels.numpy()
        rows.append({"step": step, "accuracy": accuracy_score(gold, predicted),
                     "macro_f1": f1_score(gold, predicted, average="macro",
                                          labels=range(len(LABELS)))})
        if not interactive():  # a log file gets a line per checkpoint instead of a bar
            print(f"{experiment.name} {args.dataset} model-{step}.pt: accuracy "
                  f"{rows[-1]['accuracy']:.4f}  macro-F1 {rows[-1]['macro_f1']:.4f}",
                  file=sys.stderr, flush=True)
    results = pd.DataFrame(rows)
    best = results.loc[results["accuracy"].idxmax()]

    # Written whole, atomically: two evaluations running at once never mix their rows.
    path = experiment.write_text(results_file, results.to_csv(index=False))
    # One tensorboard folder per split, apart from training's log/ (which a resumed run
    # purges past its checkpoint); evaluating again replaces the split's earlier points.
    with SummaryWriter(experiment.path / "log" / "eval" / args.dataset,
                       purge_step=min(steps)) as writer:
        for row in rows:
            writer.add_scalar(f"eval/{args.dataset}/accuracy", row["accuracy"], row["step"])
            writer.add_scalar(f"eval/{args.dataset}/macro_f1", row["macro_f1"], row["step"])
    print(f"{experiment.name} on {args.dataset} ({len(data)} examples)")
    print(results.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"best: model-{int(best['step'])}.pt  accuracy {best['accuracy']:.4f}  "
          f"macro-F1 {best['macro_f1']:.4f}")
    print(f"results written to {path}")
    return results


def write_test_predictions(args) -> None:
    output = f"predictions/{args.ckpt}/{SUBMISSION_FILES[args.dataset]}"
    experiment, model, data, device, steps = _load(args, output, step=args.ckpt)
    model.load_state_dict(experiment.load_checkpoint(args.ckpt))
    predicted = model_labels(model)[predict(model, data, args.batch_size, device,
                                            desc=f"model-{args.ckpt}", amp=args.amp == "bf16")]
    # Label names through the model's own id2label (model_labels).
    submission = pd.DataFrame({"index": data.index, "prediction": [LABELS[i] for i in predicted]})
    path = experiment.write_text(output, submission.to_csv(sep="\t", index=False))
    print(f"wrote {len(submission)} predictions of model-{args.ckpt}.pt to {path}")
