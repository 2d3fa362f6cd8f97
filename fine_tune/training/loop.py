"""The one training loop, shared by teacher fine-tuning and every distillation method.

`train` is the loop: a batch of row ids, one optimiser step, and every --log_step /
--ckpt_step what happens between steps. `training_step` is a step, in order:

1. refresh the bf16 weight copies (--amp bf16 only; one foreach copy),
2. for each of --accum_step micro-batches: copy the batch to the device (pinned,
   non-blocking), the student's forward pass, the frozen teacher's (no_grad; the largest
   forward in distillation), the objective's loss terms, one backward over their sum
   (about twice the student's forward),
3. average the gates' gradients over the ranks (torchrun only),
4. per optimiser group: clip, AdamW update (fused kernel: one pass over the weights),
   schedule.

Nothing in a step reads a value on the host: losses are summed on the device and read at
log steps, so a GPU never waits for Python. What a method computes is its `Objective`
(fine_tune/training/objective.py); everything else lives in this package, once.
"""
import torch
from torch import nn

from fine_tune import distributed
from fine_tune.data import pad_multiple
from fine_tune.errors import Interrupted
from fine_tune.glue import get_task
from fine_tune.modeling import autocast, has_padding, prepared_attention_mask
from fine_tune.training.checkpoints import evaluate_checkpoint, finish_checkpoint, prune_checkpoints
from fine_tune.training.guard import NonFiniteGuard
from fine_tune.training.log import IntervalSums, TrainingLog
from fine_tune.training.optim import make_groups
from fine_tune.training.order import BatchOrder
from fine_tune.training.run import TrainingRun
from fine_tune.training.state import restore, save_train_state, save_weights
from fine_tune.trackers import Trackers


def train(run: TrainingRun) -> None:
    args, experiment = run.args, run.experiment
    groups = make_groups(run)
    order = BatchOrder(len(run.data), args.batch_size, args.seed,
                       lengths=run.data.lengths if getattr(args, "group_by_length", False) else None)
    # (under torchrun every rank reads the state; a damaged file stops all with one line)
    start = distributed.agreed(lambda: restore(run, groups, order)) if getattr(args, "resume", False) else 0
    if start == 0 and distributed.rank() > 0:
        torch.manual_seed(args.seed + 1_000_003 * distributed.rank())  # each rank its own dropout
    run.model.train()
    run.objective.train()
    if run.teacher is not None:
        run.teacher.eval()

    total_step = args.total_step
    interval = IntervalSums()  # loss terms and statistics since the last log, on the device
    guard = NonFiniteGuard()
    report_to = getattr(args, "report_to", ("tensorboard",))
    # (rank 0 alone reports; the trackers' runs continue across --resume)
    tracked = Trackers(experiment, report_to if distributed.is_main() else (), "train",
                       fresh=not getattr(args, "resume", False))
    log = TrainingLog(experiment, start, total_step, tensorboard="tensorboard" in report_to,
                      trackers=tracked)
    step = start
    finished = False
    try:
        if start and run.eval_data:
            # Killed while the checkpoint it resumes from was being scored: score it now
            # (a finished run's last checkpoint included) instead of training again.
            finish_checkpoint(run, start, log)
        for step in range(start + 1, total_step + 1):
            rows = order.next_batch()  # row ids only: tokens were cached once per split
            run.objective.start_step(step, order.epoch)
            statistics = {}
            terms = training_step(run, groups, rows, args.accum_step, statistics)  # ~all the time
            # Bookkeeping on the device, without reading anything on the host: a handful
            # of small vector ops, whatever the number of loss terms.
            log.step(len(rows))
            guard.update(terms, groups, step)
            interval.add(terms, statistics)

            last = step == total_step
            if step % args.log_step == 0 or last:
                # Host synchronisation happens only here and at checkpoints.
                guard.check(experiment)
                means, watched = interval.read(run.objective)  # (one all-reduce under torchrun)
                distributed.agreed(lambda: log.write(step, means, groups, watched), main_only=True)
            if step % args.ckpt_step == 0 or last:
                guard.check(experiment)  # never save a diverged model
                # Rank 0 writes; under torchrun the others wait for its verdict (a full disk
                # stops them all with its one line).
                distributed.agreed(lambda: save_weights(run, groups, step), main_only=True)
                # The state before scoring (scoring draws no random numbers): a kill while
                # the checkpoint is scored resumes here and scores it, not trains again.
                save_train_state(run, groups, order, step)  # only now does --resume reach `step`
                if run.eval_data:
                    evaluate_checkpoint(run, step, log)
                distributed.agreed(lambda: prune_checkpoints(run, step), main_only=True)
        finished = True
    except KeyboardInterrupt:
        steps = experiment.checkpoint_steps()
        stopped = f"training of {experiment.name} stopped at step {step} of {total_step}"
        if steps:
            raise Interrupted(f"{stopped}; to continue from step {steps[-1]} (its last checkpoint), "
                              "run the same command with --resume") from None
        raise Interrupted(f"{stopped}, before its first checkpoint; the same command with "
                          "--resume starts again from step 0") from None
    finally:
        log.close()
        if finished and run.eval_data:
            tracked.log_best(get_task(args.task))
        tracked.finish(failed=not finished)
    distributed.barrier()  # every rank ends after rank 0's last save
    steps = experiment.checkpoint_steps()
    print(f"done: checkpoint{'s' * (len(steps) > 1)} at step{'s' * (len(steps) > 1)} "
          f"{', '.join(map(str, steps))} in {experiment.path}")


def training_step(run: TrainingRun, groups: list, rows: torch.Tensor, accum_step: int,
                  statistics: dict | None = None) -> dict:
    """One optimiser step on the batch `rows`: gradients, clipping, update, schedule."""
    for copies in run.bf16_linears.values():
        copies.refresh()  # the bf16 weight copies take the last update
    terms = accumulate_gradients(run, rows, accum_step, statistics)
    distributed.average_gradients(run.objective.parameters())  # LAD's gates, under torchrun
    for group in groups:
        group.step()
    return terms


def accumulate_gradients(run: TrainingRun, rows: torch.Tensor, accum_step: int,
                         statistics: dict | None = None) -> dict:
    """Backward over the batch `rows` in `accum_step` micro-batches; the gradients are those
    of the full batch's mean loss. Returns the batch's loss terms (detached); the
    objective's statistics are added, averaged the same way, to `statistics` if given.

    Under torchrun `rows` is the global batch: this rank computes its slice, weighted by
    world size / len(rows) per row, so that the average over ranks is the full batch's
    mean; the returned terms are this rank's share, averaged over ranks when logged."""
    batch = None  # the loss terms, weighted, as one vector
    world = distributed.world_size()
    local = distributed.shard(rows)
    # A short last batch: no empty micro-batches. A rank left without rows (a last batch
    # smaller than the world) still runs one, weighted 0, to join the reduction.
    chunks = local.tensor_split(min(accum_step, len(local))) if len(local) else [rows[:1]]
    for i, chunk in enumerate(chunks):
        weight = len(chunk) * world / len(rows) if len(local) else 0.0  # terms are micro-batch means
        with run.gradient_sync(last=i == len(chunks) - 1):
            terms = loss_terms(run, chunk)
            values = torch.stack([value.float() for value in terms.values()])  # one vector
            values.sum().mul(weight).backward()  # one backward over the summed loss
        for copies in run.bf16_linears.values():
            copies.fold_gradients()
        summed = values.detach() * weight
        batch = summed if batch is None else batch + summed
        if statistics is not None:
            for name, value in run.objective.statistics().items():
                statistics[name] = statistics.get(name, 0.0) + value * weight
    return dict(zip(terms, batch.unbind()))


def loss_terms(run: TrainingRun, rows: torch.Tensor) -> dict:
    """Forward passes of one micro-batch and the objective's loss terms. Under --amp bf16
    the matrix work runs in bf16 (the student's under autocast, the frozen teacher's in
    bf16 Linear weights, its hidden states fp32); the objectives compute losses and
    softmaxes in fp32."""
    batch = run.data.batch(rows, trim=run.dynamic_padding, multiple=pad_multiple(run.device))
    hidden = run.objective.needs_hidden_states
    padded = has_padding(batch)  # on the host; a batch without padding gets no mask
    with autocast(run.devices, run.amp):
        inputs = prepared_attention_mask(_to(batch, run.device), padded)
        labels = inputs.pop("labels")
        outputs = _call(run, "model", run.forward_model, kwargs=inputs | {"output_hidden_states": hidden})
        teacher_outputs = None
        if run.teacher is not None:
            # no_grad rather than inference_mode: the gates take teacher states as inputs
            # of their own autograd graph.
            # Under --amp bf16 the teacher's Linears are bf16 (modeling.bf16_teacher) and it
            # runs outside autocast, with autocast's outputs: fp32 hidden states, bf16
            # logits; the losses are computed in fp32.
            with torch.no_grad(), torch.autocast(run.teacher_device.type, enabled=False):
                if run.teacher_device != run.device:  # copy the batch once per device
                    inputs = prepared_attention_mask(
                        _to({k: v for k, v in batch.items() if k != "labels"}, run.teacher_device),
                        padded)
                teacher_outputs = run.teacher_forward(**inputs, output_hidden_states=hidden)
        return _call(run, "objective", run.objective, args=(outputs, teacher_outputs, labels))


def _call(run: TrainingRun, role: str, module: nn.Module, args=(), kwargs=None):
    """module(*args, **kwargs), with its Linear weights replaced by their bf16 copies when
    the run keeps them (see Bf16Linears)."""
    copies = run.bf16_linears.get(role)
    if copies is None:
        return module(*args, **(kwargs or {}))
    return torch.func.functional_call(module, copies.parameters(), args, kwargs, strict=False)


def _to(batch: dict, device: torch.device) -> dict:
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}
