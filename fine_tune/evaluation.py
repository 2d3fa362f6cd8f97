"""Evaluation of every checkpoint, and GLUE submission files.

Both read only the experiment folder (config, architecture, tokenizer, checkpoints),
so the same commands serve teachers and students.
"""
import time

import numpy as np
import pandas as pd
import torch

from fine_tune import distributed, trackers
from fine_tune.data import TokenizedSplit, load_tokenized, pad_multiple, task_file
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment
from fine_tune.glue import get_task
from fine_tune.heads import head_of
from fine_tune.metrics import METRICS
from fine_tune.modeling import (autocast, compiled, load_architecture, load_experiment_tokenizer,
                                has_padding, prepared_attention_mask, set_matmul_precision)
from fine_tune.progress import interactive, log_line, progress
from fine_tune.results import (best_step, describe_best, merge_results, preferred_rows,
                                require_best)



# On the CPU a forward pass takes at most this many rows, whatever the batch size: larger
# batches only make the activations outgrow the caches (all-MiniLM-L6-v2 on MRPC dev, 2
# cores: 20 examples/s at 512 rows per pass, 42 at 32; bench/README.md). The logits are the
# same up to float rounding (5e-8 there).
CPU_ROWS_PER_PASS = 32


@torch.inference_mode()
def predict(model, data: TokenizedSplit, batch_size: int, device: torch.device,
            desc: str = "predict", amp: bool = False) -> np.ndarray:
    """The model's outputs (logits, float32 [N, outputs]) in file order. Examples are
    batched by length (`batch_size` rows per forward pass; on the CPU at most
    CPU_ROWS_PER_PASS) and each batch is cut to its longest example: padding is masked,
    so the logits do not change. Under torchrun each rank computes every world-size-th
    batch (the same batches as one process) and all ranks get every row."""
    model.eval()
    order = torch.argsort(data.lengths.long(), stable=True)
    outputs = torch.empty(len(data), model.config.num_labels, dtype=torch.float32)
    rows_per_pass = batch_size if device.type == "cuda" else min(batch_size, CPU_ROWS_PER_PASS)
    mine = order.split(rows_per_pass)[distributed.rank()::distributed.world_size()]
    for rows in progress(mine, desc=desc, unit="batch", leave=False):
        batch = data.batch(rows, trim=True, multiple=pad_multiple(device))
        batch.pop("labels", None)
        padded = has_padding(batch)  # batches by length: many have no padding at all
        with autocast([device], amp):
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            logits = model(**prepared_attention_mask(inputs, padded)).logits
        outputs[rows] = logits.float().cpu()
    if distributed.active():  # each row comes from exactly one rank: none twice, none lost
        done = torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)
        for rows, logits in distributed.gather_objects((done, outputs[done])):
            outputs[rows] = logits
    return outputs.numpy()


def model_labels(model, task) -> np.ndarray:
    """The task's label id of each of the model's class ids, read from the model's own
    id2label (a model saved with another class order is scored and submitted correctly)."""
    id2label = {int(i): label for i, label in model.config.id2label.items()}
    names = [id2label[i] for i in range(model.config.num_labels)]
    if sorted(names) != sorted(task.labels):
        raise UserError(f"the model's labels {names} are not --task {task.name}'s "
                        f"{list(task.labels)}: its model_config.json id2label is wrong, or the "
                        "experiment was trained on another task")
    return np.array([task.labels.index(name) for name in names])


def predictions(model, task, outputs: np.ndarray) -> np.ndarray:
    """Task label ids (classification) or scores (regression) from the model's outputs."""
    predicted = head_of(task).predict(outputs)
    return predicted if task.regression else model_labels(model, task)[predicted]


def submission_values(task, predicted: np.ndarray) -> list:
    """As GLUE's server reads them: label names as the task's files write them (label
    strings for MNLI, AX, QNLI and RTE; 0/1 for the others), or scores clipped to [0, 5]."""
    if task.regression:
        return [f"{value:.3f}" for value in np.clip(predicted, 0.0, 5.0)]
    return [task.labels[i] for i in predicted]


def _load(args, output, step=None):
    """The experiment, its model (weights not yet loaded), the split's token ids, the device,
    its checkpoint steps and the step to use (`step`, or the best on dev for "best").
    `output` (relative to the experiment; a function of the step) must be writable before
    anything is computed. Under torchrun every rank loads them (rank 0 checks `output`; a
    problem on any rank stops all of them with one line)."""
    with distributed.same_on_every_rank():
        device = distributed.select_device(args)
    set_matmul_precision(args)
    distributed.start(device)

    def load():
        task = get_task(args.task)
        experiment = Experiment(args.exp_dir, args.experiment, args.model, task.trained_as).require()
        # (after the experiment: an evaluation without --task that found none is told so,
        # not that MNLI lacks its split)
        task_file(args.task, args.dataset)  # the task has that split
        config = experiment.config()
        steps = experiment.checkpoint_steps()
        if not steps:
            raise UserError(f"{experiment.describe_checkpoints(steps)}, or wait for its first "
                            "--ckpt_step")
        chosen = step
        if chosen == "best":
            chosen = resolve_best(experiment, task, steps)
        if chosen is not None and chosen not in steps:
            raise UserError(f"{experiment.checkpoint_path(chosen)} not found; "
                            f"{experiment.describe_checkpoints(steps)}: pick one with --ckpt")
        tokenizer = load_experiment_tokenizer(experiment)
        model = load_architecture(experiment).to(device)
        if distributed.is_main():  # the only writer
            experiment.check_writable(output(chosen) if callable(output) else output)
        return experiment, model, tokenizer, config, steps, chosen
    experiment, model, tokenizer, config, steps, chosen = distributed.agreed(load)
    data = distributed.main_first(lambda: load_tokenized(  # rank 0 writes the token cache
        args.data_dir, args.task, args.dataset, tokenizer, config["max_seq_len"]))
    return experiment, model, data, device, steps, chosen


def resolve_best(experiment: Experiment, task, steps: list) -> int:
    """--ckpt best: the store's best checkpoint (fine_tune.results.best_checkpoint), said in
    one line; one line when there is none or its checkpoint is gone."""
    best = require_best(experiment.path, experiment.experiment, task, "--ckpt best")
    if best.step not in steps:
        raise UserError(f"--ckpt best is model-{best.step}.pt, which is no longer on disk; "
                        f"{experiment.describe_checkpoints(steps)}: name one with --ckpt")
    print(f"--ckpt best: {describe_best(best, task)}")
    return best.step


def score(model, task, data: TokenizedSplit, batch_size: int, device: torch.device,
          amp: bool = False, desc: str = "predict") -> tuple[dict, np.ndarray]:
    """Every metric of the task for the model's current weights on a labelled split, the
    precision and the speed of the forward passes (examples/s; on CUDA the copy of each
    batch's logits to the host waits for the GPU, so the time is real); and the predicted
    label ids or scores of every row, in file order."""
    started = time.perf_counter()
    outputs = predict(model, data, batch_size, device, desc=desc, amp=amp)
    seconds = time.perf_counter() - started
    predicted, gold = predictions(model, task, outputs), data.labels.numpy()
    row = ({"amp": "bf16" if amp else "fp32"}
           | {name: float(METRICS[name](gold, predicted)) for name in task.metrics}
           | {"examples_per_s": len(data) / max(seconds, 1e-9), "device": str(device)})
    return row, predicted


def record_results(experiment: Experiment, task, split: str, data: TokenizedSplit,
                   scored: list[tuple[dict, np.ndarray]], tensorboard: bool = True) -> pd.DataFrame:
    """Merge scored checkpoints ((row with 'step', predictions) each) into the experiment's
    results store (fine_tune.results.merge_results): results_<split>.csv, the per-example
    predictions and the tensorboard points. Returns the whole table."""
    rows = [row for row, _ in scored]
    predicted = {(row["step"], row["amp"]): values for row, values in scored}
    return merge_results(experiment, task, split, rows, predicted, data.labels.numpy(), data.index,
                         tensorboard=tensorboard)


def evaluate_checkpoints(args) -> pd.DataFrame:
    results_file = f"results_{args.dataset}.csv"
    task = get_task(args.task)
    one = getattr(args, "ckpt", None)  # --ckpt: only that checkpoint (a step or "best")
    report_to = getattr(args, "report_to", ("tensorboard",))
    trackers.check(report_to)  # (before anything is loaded or scored)
    experiment, model, data, device, steps, one = _load(args, results_file, step=one)
    scored, forward = [], compiled(model, args)  # --compile: the same weights, compiled once
    for step in progress([one] if one is not None else steps, desc=f"evaluate {args.dataset}",
                         unit="ckpt"):
        model.load_state_dict(experiment.load_checkpoint(step))
        row, predicted = score(forward, task, data, args.batch_size, device,
                               amp=args.amp == "bf16", desc=f"model-{step}")
        scored.append(({"step": step} | row, predicted))
        if not interactive():  # a log file gets a line per checkpoint instead of a bar
            log_line(f"{experiment.name} {args.dataset} model-{step}.pt: {scores_text(task, row)}")
    if not distributed.is_main():  # rank 0 writes and prints for all
        return None
    # Merged into the store: rows of other checkpoints (pruned ones, the other precision)
    # stay.
    results = record_results(experiment, task, args.dataset, data, scored,
                             tensorboard="tensorboard" in report_to)
    # The scores join the experiment's tracker runs (those of its training, if any).
    tracked = trackers.Trackers(experiment, report_to, "eval")
    tracked.log_evaluation(task, args.dataset, [row for row, _ in scored])
    tracked.log_best(task)
    tracked.finish()
    main = task.metrics[0]
    parameters = sum(p.numel() for p in model.parameters())
    seconds = sum(len(data) / row["examples_per_s"] for row, _ in scored)
    speed = len(data) * len(scored) / seconds
    print(f"{experiment.name} on {args.dataset} in {scored[0][0]['amp']} ({len(data)} examples; "
          f"{parameters:,} parameters; {speed:.1f} examples/s on {device})")
    print(results.drop(columns=["examples_per_s", "device"], errors="ignore")
          .to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    best_at = best_step(results, main)
    if best_at is None:
        print(f"best ({main}): none, no checkpoint has a {main} score")
    else:
        best = preferred_rows(results).loc[lambda t: t["step"] == best_at].iloc[0]
        print(f"best ({main}): model-{best_at}.pt  {scores_text(task, best)} ({best['amp']})")
    print(f"results written to {experiment.path / results_file}")
    return results


def scores_text(task, row) -> str:
    return "  ".join(f"{name} {row[name]:.4f}" for name in task.metrics)


def write_test_predictions(args) -> None:
    task = get_task(args.task)
    output = lambda step: f"predictions/{step}/{task.submissions[args.dataset]}"  # noqa: E731
    experiment, model, data, device, steps, step = _load(args, output, step=args.ckpt)
    model.load_state_dict(experiment.load_checkpoint(step))
    outputs = predict(compiled(model, args), data, args.batch_size, device, desc=f"model-{step}",
                      amp=args.amp == "bf16")
    if not distributed.is_main():  # rank 0 writes for all
        return
    values = submission_values(task, predictions(model, task, outputs))
    submission = pd.DataFrame({"index": data.index, "prediction": values})
    path = experiment.write_text(output(step), submission.to_csv(sep="\t", index=False))
    print(f"wrote {len(submission)} predictions of model-{step}.pt to {path}")
