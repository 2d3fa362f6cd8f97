"""What happens to a checkpoint once saved: scored on the --eval_during_training splits
into the results store, and old ones deleted under --keep_checkpoints (never the best)."""
from fine_tune import distributed
from fine_tune.glue import get_task
from fine_tune.training.log import TrainingLog
from fine_tune.training.run import TrainingRun


def finish_checkpoint(run: TrainingRun, step: int, log: TrainingLog) -> None:
    """On --resume from model-<step>.pt: score it on the --eval_during_training splits
    that have no row of it yet (the run was stopped while scoring it), then prune as
    training would have. Every rank reads the same results files, so all agree."""
    from fine_tune.results import read_results
    missing = []
    for split in run.eval_data:
        table = read_results(run.experiment.path, split)
        if table is None or step not in set(table["step"]):
            missing.append(split)
    if not missing:
        return
    if distributed.is_main():
        print(f"model-{step}.pt was saved but not scored on {', '.join(missing)}: scoring it "
              "before training goes on")
    evaluate_checkpoint(run, step, log, splits=missing)
    distributed.agreed(lambda: prune_checkpoints(run, step), main_only=True)


def evaluate_checkpoint(run: TrainingRun, step: int, log: TrainingLog, splits=None) -> None:
    """--eval_during_training: score the model just saved as model-<step>.pt on each split,
    merged into the experiment's results store (rows, per-example predictions, tensorboard
    points) as run_fine_tune_eval.py --ckpt does. Evaluation draws no random numbers, so
    training continues exactly as without it."""
    from fine_tune.evaluation import record_results, score, scores_text
    task = get_task(run.args.task)
    for split, data in run.eval_data.items():
        if splits is not None and split not in splits:
            continue
        # (under torchrun every rank predicts its share of the batches; rank 0 writes)
        row, predicted = score(run.model, task, data, run.args.eval_batch_size, run.device,
                               amp=run.amp, desc=f"{split} model-{step}")
        distributed.agreed(lambda: record_results(  # rank 0 writes; all hear of a failure
            run.experiment, task, split, data, [({"step": step} | row, predicted)],
            tensorboard=log.tensorboard), main_only=True)
        if distributed.is_main():
            log.note(f"{run.experiment.name} {split} model-{step}.pt: {scores_text(task, row)}")
            log.trackers.log_evaluation(task, split, [{"step": step} | row])
    run.model.train()
    log.restart_clock()  # examples/s measures training alone


def prune_checkpoints(run: TrainingRun, step: int) -> None:
    """--keep_checkpoints N: delete all checkpoints up to `step` but the N most recent and
    the best one (fine_tune.results.best_checkpoint: read from the store, so scores of
    earlier runs and of run_fine_tune_eval.py count too, whatever this run's flags). Runs
    after the training state points at model-<step>.pt, which is always among the most
    recent. The store's rows of deleted checkpoints are kept and marked 'pruned'."""
    keep_count = getattr(run.args, "keep_checkpoints", None)
    if keep_count is None:  # (called on rank 0 alone under torchrun)
        return
    from fine_tune.results import best_checkpoint, mark_checkpoints
    experiment = run.experiment
    steps = [s for s in experiment.checkpoint_steps() if s <= step]
    keep = set(steps[-keep_count:])
    best = best_checkpoint(experiment.path, get_task(run.args.task))
    if best is not None:
        keep.add(best.step)
    pruned = [old for old in steps if old not in keep]
    for old in pruned:  # the model first: a listed checkpoint always has its gates
        for kind in ("model", "gate"):
            experiment.checkpoint_path(old, kind).unlink(missing_ok=True)
    if pruned:
        mark_checkpoints(experiment.path)
