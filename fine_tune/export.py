"""Export one checkpoint of an experiment as a standard Hugging Face model folder.

    python -m fine_tune.export --experiment LAD_soft_4_6 --model bert --task mnli \
        --ckpt 49088|best --out DIR

DIR gets config.json (the task's id2label/label2id and problem_type), model.safetensors,
the tokenizer files and a model card (README.md: method, teacher, data, flags, dev
scores), so that `AutoModelForSequenceClassification.from_pretrained(DIR)` and
`pipeline("text-classification", model=DIR)` load it offline. `--ckpt best` takes the
checkpoint that scored best on the task's dev split (run run_fine_tune_eval.py first).
DIR is written whole or not at all.
"""
import json
import shutil
import tempfile
from pathlib import Path

from fine_tune.cli import add_experiment_args, find_task, new_parser, step_or_best
from fine_tune.errors import UserError, run_cli
from fine_tune.results import describe_best, read_results, require_best

def model_card(experiment, config: dict, step: int, task, scores: dict,
               model_max_length: int) -> str:
    script = config.get("command", "").split(" ")[0].rsplit("/", 1)[-1] or "(unknown)"
    teacher = (f"{config['teacher_exp']} (checkpoint {config['tckpt']})"
               if "teacher_exp" in config else "none: fine-tuned from " + str(config.get("ptrain_ver")))
    lines = [f"# {experiment.name}, checkpoint {step}", "",
             f"A BERT classifier for GLUE {task.name.upper()}, trained with this project's "
             f"`{script}`.", "",
             f"- teacher: {teacher}",
             f"- pre-trained model: {config.get('ptrain_ver')}",
             f"- data: GLUE {task.folder}, split `{config.get('dataset')}`, max_seq_len "
             f"{config.get('max_seq_len')} (the tokenizer truncates at the model's "
             f"{model_max_length} positions)",
             f"- labels: {', '.join(task.labels) if task.labels else 'a score in [0, 5] (regression)'}",
             ""]
    if scores:
        lines += ["Dev scores of this checkpoint:", ""]
        lines += [f"- {split} {name}: {value:.4f} ({row['amp']})" for split, row in scores.items()
                  for name, value in row.items() if name != "amp"]
        lines.append("")
    lines += ["The command that trained it:", "", "```", config.get("command", ""), "```", "",
              "Every setting of the run:", "", "```json",
              json.dumps({k: v for k, v in config.items() if k != "command"}, indent=2,
                         sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def export(args) -> None:
    from fine_tune.experiment import Experiment
    from fine_tune.glue import get_task
    from fine_tune.modeling import load_architecture, load_experiment_tokenizer

    task = get_task(args.task)
    experiment = Experiment(args.exp_dir, args.experiment, args.model, args.task).require()
    config = experiment.config()
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty: choose a new folder")
    step = args.ckpt
    if step == "best":
        best = require_best(experiment.path, args.experiment, task, "--ckpt best")
        step = best.step
        print(f"--ckpt best: {describe_best(best, task)}")
    state = experiment.load_checkpoint(step)
    model = load_architecture(experiment)
    model.load_state_dict(state)
    model.config.problem_type = ("regression" if task.regression
                                 else "single_label_classification")
    tokenizer = load_experiment_tokenizer(experiment)
    # A student with random embeddings has only max_seq_len position rows (128), but the
    # tokenizer it inherited says 512: pipeline(..., truncation=True) would then pass longer
    # inputs and fail. Truncate at what the model can take.
    tokenizer.model_max_length = min(tokenizer.model_max_length,
                                     model.config.max_position_embeddings)
    scores = {}
    for split in task.labelled_splits():
        table = read_results(experiment.path, split)
        if table is not None:
            row = table[table["step"] == step]  # (fp32 first where both precisions were scored)
            if len(row):
                scores[split] = {name: float(row.iloc[0][name]) for name in task.metrics
                                 if name in row} | {"amp": row.iloc[0]["amp"]}

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    except OSError as error:
        raise UserError(f"cannot create --out {out} ({error.strerror or error})") from None
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "README.md").write_text(model_card(experiment, config, step, task, scores,
                                                        tokenizer.model_max_length))
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    except OSError as error:
        raise UserError(f"cannot write --out {out} ({error.strerror or error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out}: model-{step}.pt of {experiment.name} as a Hugging Face model folder "
          "(AutoModelForSequenceClassification.from_pretrained / pipeline)")


def build_parser():
    parser = new_parser(__doc__.split("\n\n")[0], prog="python -m fine_tune.export")
    add_experiment_args(parser, reads=True)
    group = parser.add_argument_group("export")
    group.add_argument("--ckpt", type=step_or_best, metavar="STEP|best", required=True,
                       help="step of the checkpoint model-<ckpt>.pt, or 'best' for the best on "
                            "the task's dev split (from run_fine_tune_eval.py's results)")
    group.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.resolvers = (find_task,)  # --task left out: the one experiment of that name
    return parser


if __name__ == "__main__":
    run_cli(export, build_parser().parse_args())
