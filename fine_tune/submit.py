"""Pack GLUE submission files into one zip for the GLUE server.

    python -m fine_tune.submit --mnli LAD_soft_4_6 --ax LAD_soft_4_6 --rte LAD:778 ... \
        [--output exp/glue_submission.zip] [--partial]

One flag per task names the experiment whose submission file goes in, with a checkpoint
(`NAME:STEP`) or, by default, the checkpoint that scored best on dev (`NAME` or
`NAME:best`, read from the experiment's results file of the task's dev split: MNLI's
dev_matched). The files must have been written by generate_test_prediction.py; a
missing one is named with the command that writes it. The zip holds the eleven files at
its top level; an incomplete set is refused with the list of what is missing, unless
--partial is given.
"""
import argparse
import io
import zipfile
from pathlib import Path

from fine_tune.cli import new_parser
from fine_tune.errors import UserError, run_cli
from fine_tune.glue import TASKS_BY_NAME
from fine_tune.results import describe_best, exp_dir_flag, require_best

def parse_choice(text: str) -> tuple:
    name, _, step = text.partition(":")
    if not name or (step and step != "best" and not step.isdigit()):
        raise argparse.ArgumentTypeError(f"expected EXPERIMENT, EXPERIMENT:STEP or "
                                         f"EXPERIMENT:best, got {text!r}")
    return name, (int(step) if step.isdigit() else "best")


def chosen_files(args) -> tuple[list, list]:
    """[(path, name in the zip)] of the chosen experiments, and the tasks left out."""
    files, missing = [], []
    for name, task in TASKS_BY_NAME.items():
        choice = getattr(args, name)
        if choice is None:
            missing.append(name)
            continue
        experiment, step = choice
        folder = Path(args.exp_dir) / f"{experiment}_{args.model}_{task.trained_as}"
        if not (folder / "config.json").is_file():
            raise UserError(f"--{name} {experiment}: no experiment at {folder} (a {task.trained_as} "
                            f"experiment under --exp_dir {args.exp_dir})")
        if step == "best":
            best = require_best(folder, experiment, task, f"--{name}")
            step = best.step
            print(f"--{name} {experiment}: {describe_best(best, task)}")
        for split, file_name in task.submissions.items():
            path = folder / "predictions" / str(step) / file_name
            if not path.is_file():
                if not (folder / f"model-{step}.pt").is_file():
                    raise UserError(f"--{name} {experiment}: {path} not found, and model-{step}.pt "
                                    "is no longer on disk to write it: name a step whose "
                                    f"predictions exist (--{name} {experiment}:STEP)")
                raise UserError(f"--{name} {experiment}: {path} not found: write it with "
                                f"python generate_test_prediction.py --experiment {experiment} "
                                f"--task {name} --dataset {split} --ckpt {step}{exp_dir_flag(folder)}")
            files.append((path, file_name))
    return files, missing


def pack(args) -> None:
    files, missing = chosen_files(args)
    if not files:
        raise UserError("no task chosen: name an experiment per task, e.g. --mnli LAD_soft_4_6")
    if missing and not args.partial:
        raise UserError(f"incomplete submission: no experiment for {', '.join(missing)} (flags "
                        f"{' '.join('--' + name for name in missing)}); pass --partial to pack "
                        "only the chosen tasks")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            archive.write(path, arcname=name)
    from fine_tune.io import atomic_write_bytes  # the zip appears whole or not at all
    output = Path(args.output) if args.output else Path(args.exp_dir) / "glue_submission.zip"
    try:
        atomic_write_bytes(buffer.getvalue(), output)
    except OSError as error:
        raise UserError(f"cannot write {output} ({error.strerror or error}): check --output") from None
    print(f"wrote {output} with {', '.join(name for _, name in files)}"
          + (f" (partial: without {', '.join(missing)})" if missing else ""))


def build_parser():
    parser = new_parser(__doc__.split("\n\n")[0], prog="python -m fine_tune.submit")
    for name, task in TASKS_BY_NAME.items():
        files = ", ".join(task.submissions.values())
        whose = f" (an {task.trained_as} experiment)" if task.model_task else ""
        parser.add_argument(f"--{name}", type=parse_choice, metavar="NAME[:STEP|:best]",
                            help=f"experiment{whose} whose {files} goes in, at checkpoint STEP or "
                                 "the best on dev (the default)")
    parser.add_argument("--output", default=None,
                        help="the zip to write (default: <exp_dir>/glue_submission.zip, beside "
                             "the experiments and ignored by git)")
    parser.add_argument("--partial", action="store_true",
                        help="pack only the tasks named instead of refusing an incomplete set")
    parser.add_argument("--model", default="bert", help="the experiments' --model")
    parser.add_argument("--exp_dir", default="exp", help="folder holding all experiment folders")
    return parser


if __name__ == "__main__":
    run_cli(pack, build_parser().parse_args())
