"""Teacher fine-tuning: a pre-trained BERT with a classification head, cross-entropy."""
import shutil

from transformers import set_seed

from fine_tune import distributed
from fine_tune.data import NUM_CLASSES
from fine_tune.errors import UserError
from fine_tune.experiment import Experiment, pretrained_source
from fine_tune.glue import get_task
from fine_tune.heads import head_of
from fine_tune.modeling import (check_max_seq_len, check_tokenizer, device_id,
                                load_pretrained_classifier, load_tokenizer, set_matmul_precision)
from fine_tune.settings import derive
from fine_tune.training import (FineTuning, TrainingRun, check_padding, check_training_args,
                                train, training_data)


def fine_tune_teacher(args) -> None:
    # Everything that can fail on bad input happens before the experiment folder exists
    # (and the flags before the processes of a torchrun start talking).
    with distributed.same_on_every_rank():  # (flags only: rank 0 says what is wrong)
        check_training_args(args)
        experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task)
        experiment.refuse_folder_name()
        device = distributed.select_device(args)
    set_matmul_precision(args)
    distributed.start(device)
    # What was left out, filled in (a new Settings; the parsed flags stay as given).
    args = derive(args, num_class=args.num_class or NUM_CLASSES[args.task],
                  device_id=device_id(device), method="teacher",
                  world_size=distributed.world_size())

    def load():
        tokenizer = load_tokenizer(args.ptrain_ver)
        set_seed(args.seed)
        model = load_pretrained_classifier(args.ptrain_ver, get_task(args.task), args.dropout)
        check_max_seq_len(args.max_seq_len, model.config)
        check_tokenizer(tokenizer, model.config, args.ptrain_ver)
        return tokenizer, model
    tokenizer, model = distributed.agreed(load)
    # Recorded as an absolute path when it is a local folder (messages above name it as typed).
    args = derive(args, ptrain_ver=pretrained_source(args.ptrain_ver))
    args, data, eval_data = training_data(args, tokenizer)

    objective = FineTuning(head_of(get_task(args.task)))
    check_padding(args, objective)
    with experiment.training(vars(args), overwrite=args.overwrite, resume=args.resume):
        def write():
            experiment.write_json("model_config.json", model.config.to_dict())
            save_tokenizer(tokenizer, experiment)
        distributed.agreed(write, main_only=True)
        train(TrainingRun(args, experiment, model.to(device), device, objective, data,
                          eval_data=eval_data))


def save_tokenizer(tokenizer, experiment: Experiment) -> None:
    """Keep the tokenizer with the experiment so evaluation and students need nothing else.
    Staged and renamed into place; a resumed run keeps the one it has."""
    final = experiment.path / "tokenizer"
    if final.is_dir():
        return
    staging = experiment.path / ".tokenizer.tmp"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer.save_pretrained(staging)
        staging.rename(final)
    except OSError as error:
        raise UserError(f"cannot write {final} ({error.strerror or error}): free disk space or "
                        f"fix the permissions of {experiment.path}") from None
