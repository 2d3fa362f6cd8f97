"""Evaluation of every checkpoint, and GLUE submission files.

Both read only the experiment folder (config, architecture, tokenizer, checkpoints),
so the same commands serve teachers and students.
"""
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.tensorboard import SummaryWriter

from fine_tune.data import LABELS, SUBMISSION_FILES, TokenizedSplit, load_tokenized
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment
from fine_tune.progress import progress
from fine_tune.modeling import (autocast, build_classifier, load_experiment_tokenizer,
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


def _load(args, step=None):
    """The experiment, its model (weights not yet loaded), the split's token ids, the device."""
    experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task).require()
    config = experiment.config()
    steps = experiment.checkpoint_steps()
    if not steps:
        raise UserError(f"{experiment.path} has no checkpoints (model-<step>.pt) yet: train it first")
    if step is not None and step not in steps:
        raise UserError(f"{experiment.checkpoint_path(step)} not found; {experiment.name} has "
                        f"checkpoints at steps {', '.join(map(str, steps))}: pick one with --ckpt")
    device = resolve_device(args.device_id)
    tokenizer = load_experiment_tokenizer(experiment)
    data = load_tokenized(args.data_dir, args.task, args.dataset, tokenizer, config["max_seq_len"])
    model = build_classifier(experiment.model_config()).to(device)
    return experiment, model, data, device, steps


def evaluate_checkpoints(args) -> pd.DataFrame:
    experiment, model, data, device, steps = _load(args)
    rows = []
    for step in progress(steps, desc=f"evaluate {args.dataset}", unit="ckpt"):
        model.load_state_dict(experiment.load_checkpoint(step))
        predicted = predict(model, data, args.batch_size, device, desc=f"model-{step}",
                            amp=args.amp == "bf16")
        gold = data.labels.numpy()
        rows.append({"step": step, "accuracy": accuracy_score(gold, predicted),
                     "macro_f1": f1_score(gold, predicted, average="macro",
                                          labels=range(len(LABELS)))})
    results = pd.DataFrame(rows)
    best = results.loc[results["accuracy"].idxmax()]

    path = experiment.write_text(f"results_{args.dataset}.csv", results.to_csv(index=False))
    with SummaryWriter(experiment.path / "log") as writer:
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
    experiment, model, data, device, steps = _load(args, step=args.ckpt)
    model.load_state_dict(experiment.load_checkpoint(args.ckpt))
    predicted = predict(model, data, args.batch_size, device, desc=f"model-{args.ckpt}",
                        amp=args.amp == "bf16")
    submission = pd.DataFrame({"index": data.index, "prediction": [LABELS[i] for i in predicted]})
    path = experiment.write_text(f"predictions/{args.ckpt}/{SUBMISSION_FILES[args.dataset]}",
                                 submission.to_csv(sep="\t", index=False))
    print(f"wrote {len(submission)} predictions of model-{args.ckpt}.pt to {path}")
