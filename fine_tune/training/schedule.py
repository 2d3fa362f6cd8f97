"""Settings the loop needs checked or resolved before it starts: flag combinations
argparse cannot check, --epoch / --warmup_rate turned into steps once the number of
examples is known, and the tokenized training and --eval_during_training splits."""
from fine_tune import distributed
from fine_tune.data import NUM_CLASSES, load_tokenized, task_file
from fine_tune.errors import UserError
from fine_tune.glue import get_task
from fine_tune.results import dev_split
from fine_tune.settings import derive
from fine_tune.training.objective import Objective
from fine_tune.training.optim import OptimizerSettings


def check_padding(args, objective: Objective) -> None:
    if getattr(args, "dynamic_padding", False) and not objective.padding_invariant:
        raise UserError("--dynamic_padding would change this method's loss (its hidden-state "
                        "terms or gates depend on the padded length --max_seq_len); leave it off")
    if getattr(args, "unpad", False) and not (objective.padding_invariant and objective.unpad_safe):
        raise UserError("--unpad would change this method's loss (its hidden-state terms or "
                        "gates read the pad positions, which --unpad does not compute); leave "
                        "it off")


def check_training_args(args) -> None:
    """Flag combinations argparse cannot check on its own."""
    from fine_tune import trackers
    task_file(args.task, args.dataset)  # the task has that split
    trackers.check(getattr(args, "report_to", ()))  # a tracker that cannot work: before anything
    labelled = get_task(args.task).labelled_splits()
    during = getattr(args, "eval_during_training", None) or []
    for split in during:
        if split not in labelled:
            raise UserError(f"--eval_during_training {split}: --task {args.task} has no labelled "
                            f"split {split!r}; use {' or '.join(labelled)}")
    dev = dev_split(get_task(args.task))
    if during and getattr(args, "keep_checkpoints", None) and dev not in during:
        raise UserError(f"--keep_checkpoints keeps the best checkpoint on {dev}, but "
                        f"--eval_during_training {','.join(during)} does not score it: add {dev} "
                        f"(--eval_during_training {','.join([dev, *during])})")
    expected = NUM_CLASSES[args.task]
    if getattr(args, "num_class", None) is not None and args.num_class != expected:
        has = f"has {expected} classes" if expected > 1 else "is a regression with one output"
        raise UserError(f"--num_class {args.num_class} does not match --task {args.task}, which "
                        f"{has}; use --num_class {expected} (or leave it out)")
    if getattr(args, "unpad", False) and getattr(args, "compile", False):
        raise UserError("--unpad and --compile: pick one (the unpadded forward's token count "
                        "changes every batch, which would make torch.compile recompile)")
    if getattr(args, "group_by_length", False) and not getattr(args, "dynamic_padding", False):
        raise UserError("--group_by_length only saves time when batches are cut to their longest "
                        "row: add --dynamic_padding, or leave --group_by_length out")
    if args.batch_size % args.accum_step:
        raise UserError(f"--batch_size {args.batch_size} is not divisible by --accum_step "
                        f"{args.accum_step}; the effective batch is --batch_size, split into "
                        "--accum_step equal micro-batches")
    for prefix in ("", "gate_"):
        if not hasattr(args, prefix + "total_step"):
            continue
        settings = OptimizerSettings.from_args(args, prefix)  # gate values default to the model's
        total, warmup = settings.total_step, settings.warmup_step
        if total is None or warmup is None:  # (--epoch, --warmup_rate: checked once counted)
            continue
        if warmup > total:
            raise UserError(f"--{prefix}warmup_step {warmup} is larger than --{prefix}total_step "
                            f"{total}; the warmup must end within training")


def resolve_schedule(args, num_examples: int):
    """The settings with --epoch / --warmup_rate (and the gates' --gate_epoch /
    --gate_warmup_rate) turned into steps as the authors' scripts count them:
    round(num_examples / batch_size * epochs) and round(total steps * rate). Says what it
    computed in one line per group."""
    changes = {}
    for prefix in ("", "gate_"):
        if not hasattr(args, prefix + "epoch"):
            continue
        total = getattr(args, prefix + "total_step")
        epoch, rate = getattr(args, prefix + "epoch"), getattr(args, prefix + "warmup_rate")
        said = []
        if epoch is not None:
            total = max(1, round(num_examples / args.batch_size * epoch))
            changes[prefix + "total_step"] = total
            said.append(f"--{prefix}epoch {epoch:g} on {num_examples} examples at --batch_size "
                        f"{args.batch_size} is --{prefix}total_step {total}")
        if rate is not None:
            total = total if total is not None else changes.get("total_step", args.total_step)
            changes[prefix + "warmup_step"] = round(total * rate)
            said.append(f"--{prefix}warmup_rate {rate:g} is --{prefix}warmup_step "
                        f"{changes[prefix + 'warmup_step']}")
        if said:
            print("; ".join(said))
    if not changes:
        return args
    args = derive(args, **changes)
    check_training_args(args)  # the warmup must still end within training
    return args


def training_data(args, tokenizer):
    """(settings, training split, {split: --eval_during_training split}), tokenized (rank 0
    first under torchrun: it writes the token cache, the others read it), before training
    starts, so a missing file stops the run at once; the settings with --epoch /
    --warmup_rate turned into steps, now that the number of examples is known."""
    def load():
        return (load_tokenized(args.data_dir, args.task, args.dataset, tokenizer, args.max_seq_len),
                {split: load_tokenized(args.data_dir, args.task, split, tokenizer, args.max_seq_len)
                 for split in getattr(args, "eval_during_training", None) or []})
    data, eval_data = distributed.main_first(load)
    with distributed.same_on_every_rank():
        return resolve_schedule(args, len(data)), data, eval_data
