"""Command-line flag groups, each declared once and shared by the entry scripts.

Defaults are the values of the seed commands in README.md, so a flag left out
behaves as in the paper's runs. The training flags whose values depend on the task
(learning rates, schedule, loss weights) default per --task instead, from the table in
fine_tune.task_defaults (MNLI's are the seed's); the parsers fill them in as they parse.
Every flag has a help text; `--help` lists them.
"""
import argparse
import difflib
import importlib
import sys
import textwrap
from pathlib import Path

from fine_tune import task_defaults
from fine_tune.errors import quiet_process, run_cli, wait_for_rank_0
from fine_tune.glue import (LABELED_SPLITS, NUM_CLASSES, TASKS, TEST_SPLITS, TRAINABLE_TASKS,
                            get_task)
from fine_tune.settings import Settings

# Nothing here imports torch or transformers: `--help` and flag errors answer at once.
MODELS = ("bert",)
ALP_VARIANTS = ("alp-kd", "alp-kd-hidden", "alp-kd-hidden-v2")
PKD_LOSSES = ("mse", "pkd-skip")
LAYER_MAPS = ("uniform", "last", "random")
GATE_MODES = ("learned", "frozen", "uniform")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or action.required:
            return action.help
        return f"{action.help} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    # Functions (parser, namespace) run after parsing: defaults that depend on other flags.
    resolvers: tuple = ()

    def error(self, message):
        """One line naming the bad flag, instead of argparse's usage dump (under torchrun
        every process parses the same flags: rank 0 says it)."""
        if quiet_process():
            wait_for_rank_0()
            self.exit(2)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # Unknown flags first: a misspelt required flag (--experimnet) would otherwise be
        # reported as the real one missing.
        argv = sys.argv[1:] if args is None else list(args)
        for token in argv:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in self._option_string_actions:
                close = difflib.get_close_matches(name, self._option_string_actions, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                self.error(f"unrecognized argument {name}{hint}")
        given = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
        for prefix in ("", "gate_"):  # a schedule in steps or in epochs, not both
            for steps, other in (("total_step", "epoch"), ("warmup_step", "warmup_rate")):
                if {f"--{prefix}{steps}", f"--{prefix}{other}"} <= given:
                    self.error(f"--{prefix}{steps} and --{prefix}{other} set the same thing: "
                               "pass one of them")
        namespace, extras = super().parse_known_args(argv, namespace)
        for resolve in self.resolvers:
            resolve(self, namespace)
        return namespace, extras


def new_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    # No abbreviations: --ckpt must not quietly mean --ckpt_step in a distillation script.
    return _Parser(description=description, prog=prog, formatter_class=_HelpFormatter,
                   allow_abbrev=False)


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def seed_int(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value < 2 ** 32:  # numpy's and Python's seeding accept no more
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32 - 1], got {text}")
    return value


def probability(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def step_or_best(text: str):
    """--ckpt: a checkpoint's step, or 'best' (the best on the task's dev split)."""
    return "best" if text == "best" else non_negative_int(text)


def device_index(text: str) -> int:
    return _number(text, int)


def split_list(text: str) -> list[str]:
    """'dev_matched,dev_mismatched' -> a list of labelled splits."""
    splits = [item for item in text.replace(" ", "").split(",") if item]
    unknown = [split for split in splits if split not in LABELED_SPLITS]
    if unknown or not splits:
        raise argparse.ArgumentTypeError(f"expected labelled splits separated by commas, from "
                                         f"{', '.join(LABELED_SPLITS)}; got {text!r}")
    if len(set(splits)) != len(splits):
        raise argparse.ArgumentTypeError(f"{text!r} names a split twice")
    return splits


def add_experiment_args(parser, reads=False, tasks=TRAINABLE_TASKS):
    group = parser.add_argument_group("experiment")
    group.add_argument("--experiment", required=True,
                       help="experiment to read, in <exp_dir>/<experiment>_<model>_<task>/" if reads
                       else "experiment name; outputs go to <exp_dir>/<experiment>_<model>_<task>/")
    group.add_argument("--model", default="bert", choices=MODELS, help="model family")
    group.add_argument("--task", default=None if reads else "mnli", choices=tasks,
                       help="GLUE task (docs/tasks.md lists each one's files)"
                            + ("; ax is predicted by an MNLI experiment, named by --experiment"
                               if "ax" in tasks else "")
                            + ("; left out: the task of the one experiment named --experiment "
                               "under --exp_dir (of those with a split --dataset), mnli when "
                               "there is none" if reads else "; the defaults marked 'per --task' "
                               "follow it"))
    group.add_argument("--data_dir", default="data/fine_tune",
                       help="folder holding <TASK>/<split>.tsv (MNLI/train.tsv, ...)")
    group.add_argument("--exp_dir", default="exp", help="folder holding all experiment folders")
    return group


def add_amp_arg(group, training=True):
    """The precision and compilation flags (training, evaluation and prediction)."""
    group.add_argument("--amp", default="fp32", choices=("fp32", "bf16"),
                       help="bf16: run the forward passes under bf16 autocast"
                            + (" (losses and softmaxes stay fp32; a frozen teacher's Linear "
                               "weights are cast to bf16 once and it runs without autocast, its "
                               "LayerNorms and residual stream in fp32: autocast's numbers)"
                               if training else "; its scores are stored as bf16 rows, apart "
                               "from fp32 ones")
                            + "; meant for CUDA GPUs with bf16 support")
    group.add_argument("--tf32", action="store_true",
                       help="TF32 matrix math for fp32 runs on CUDA GPUs (Ampere or newer): "
                            "several times the fp32 matmul rate, with a 10-bit mantissa in the "
                            "products; off by default, so fp32 means full fp32 (no effect on the "
                            "CPU or on bf16 work)")
    group.add_argument("--compile", action="store_true",
                       help="wrap the model" + (" (and the teacher)" if training else "")
                            + " in torch.compile: on a GPU fewer, fused kernels; the first steps "
                              "(and each new batch shape) wait for compilation, which on a CPU "
                              "can take minutes and is not faster there")


def add_device_arg(group, flag="--device_id", what="the model"):
    default = ("GPU 0 when the machine has a GPU (said in one line), else the CPU"
               if flag == "--device_id" else "--device_id")  # the others follow --device_id
    torchrun = ("; under torchrun each process uses its own GPU, cuda:LOCAL_RANK (-1: CPU "
                "processes talking through gloo)" if flag == "--device_id" else
                "; under torchrun leave it out (it runs on each process's device)")
    group.add_argument(flag, type=device_index, default=None,
                       help=f"CUDA device index for {what}; -1 runs on the CPU{torchrun} "
                            f"(default: {default})")


def add_optimizer_args(parser, prefix="", what="model"):
    """AdamW, linear warmup/decay and clipping for one group of trainable parameters.
    `prefix` is '' for the model and 'gate_' for LAD's gates, whose schedule defaults
    to the model's (None here). The learning rate and the model's schedule default per
    --task (per_task)."""
    same = " (default: the model's)" if prefix else ""
    group = parser.add_argument_group(f"optimisation of the {what}")
    group.add_argument(f"--{prefix}lr", type=positive_float, default=None, help="peak learning rate")
    group.add_argument(f"--{prefix}beta1", type=probability, default=0.9, help="AdamW beta1")
    group.add_argument(f"--{prefix}beta2", type=probability, default=0.999, help="AdamW beta2")
    group.add_argument(f"--{prefix}eps", type=positive_float, default=1e-8, help="AdamW epsilon")
    group.add_argument(f"--{prefix}weight_decay", type=non_negative_float, default=0.01,
                       help="AdamW decoupled weight decay (not applied to biases and LayerNorm)")
    group.add_argument(f"--{prefix}max_norm", type=positive_float, default=1.0,
                       help="clip the gradient norm to this value")
    group.add_argument(f"--{prefix}total_step", type=positive_int, default=None,
                       help="training steps; the learning rate reaches 0 here" + same)
    group.add_argument(f"--{prefix}warmup_step", type=non_negative_int, default=None,
                       help="steps of linear warmup from 0, then linear decay" + same)
    group.add_argument(f"--{prefix}epoch", type=positive_float, default=None,
                       help=f"instead of --{prefix}total_step, as the authors' per-task scripts: "
                            "round(examples / --batch_size * epochs) steps (printed, and written "
                            "to config.json)")
    group.add_argument(f"--{prefix}warmup_rate", type=probability, default=None,
                       help=f"instead of --{prefix}warmup_step: round(total steps * rate)")
    return group


def add_training_args(parser, batch_size=32, ckpt_step=3000, log_step=500):
    group = parser.add_argument_group("training")
    group.add_argument("--dataset", default="train", choices=LABELED_SPLITS,
                       help="split to train on (MNLI: train, dev_matched, dev_mismatched; the "
                            "other tasks: train, dev)")
    group.add_argument("--batch_size", type=positive_int, default=batch_size,
                       help="examples per optimiser step (the effective batch, accumulation included)")
    group.add_argument("--accum_step", type=positive_int, default=1,
                       help="split each batch into this many micro-batches to save memory; "
                            "must divide --batch_size")
    group.add_argument("--ckpt_step", type=positive_int, default=ckpt_step,
                       help="save model-<step>.pt every this many steps (and at the last step)")
    group.add_argument("--log_step", type=positive_int, default=log_step,
                       help="every this many steps, log the mean loss terms, learning rates and "
                            "gradient norms to tensorboard (and, when stderr is not a terminal, "
                            "one plain line with examples/s to stderr)")
    group.add_argument("--dropout", type=probability, default=0.1,
                       help="dropout of hidden states, attention and the classifier")
    group.add_argument("--seed", type=seed_int, default=42,
                       help="random seed (weights, dropout, data order), 0 to 2^32 - 1")
    group.add_argument("--dynamic_padding", action="store_true",
                       help="cut each batch to its longest example (rounded up to a multiple of 8) "
                            "instead of --max_seq_len; only for losses that do not depend on the "
                            "padded length (teacher fine-tuning, --alp_exp alp-kd, --pkd_loss pkd-skip, "
                            "KD, MiniLM)")
    group.add_argument("--group_by_length", action="store_true",
                       help="batches of rows of similar length: each shuffled run of 50 batches is "
                            "sorted by length, so that --dynamic_padding cuts less padding (faster). "
                            "Off by default, as in the authors' code: it changes which rows share "
                            "a batch, hence the training. Needs --dynamic_padding")
    group.add_argument("--unpad", action="store_true",
                       help="run the trained model's token-wise layers (Linears, LayerNorms, "
                            "dropout: nearly all of a step) on the batch's real tokens only, "
                            "padding only around the attention product: faster by about the "
                            "batch's padding fraction. The same model and loss; off by default "
                            "because dropout then draws over fewer elements, so a run is not "
                            "bit-identical to the authors'. Only for losses that read no pad "
                            "position (as --dynamic_padding); not with --compile")
    add_amp_arg(group)
    group.add_argument("--eval_during_training", type=split_list, default=None,
                       metavar="SPLIT[,SPLIT]",
                       help="evaluate every checkpoint as it is saved on these labelled splits "
                            "(e.g. dev_matched,dev_mismatched), into the same results_<split>.csv "
                            "and tensorboard points as run_fine_tune_eval.py; training itself is "
                            "unchanged (default: no evaluation during training)")
    group.add_argument("--eval_batch_size", type=positive_int, default=512,
                       help="examples per forward pass of --eval_during_training on a GPU (on the "
                            "CPU at most 32, as for run_fine_tune_eval.py --batch_size)")
    group.add_argument("--keep_checkpoints", type=positive_int, default=None, metavar="N",
                       help="keep only the N most recent checkpoints, plus the best one: the "
                            "best first metric of the task on its dev split (MNLI: dev_matched) "
                            "in the experiment's results store, whichever run or command scored "
                            "it; with --eval_during_training, that flag must include the dev "
                            "split. Scores of deleted checkpoints stay in results_<split>.csv, "
                            "marked pruned; --resume still works (default: keep every "
                            "checkpoint)")
    group.add_argument("--resume", action="store_true",
                       help="continue a killed run of this experiment from its last checkpoint, "
                            "exactly as if it had not stopped (same flags required, except "
                            "--log_step, --ckpt_step, device ids and paths)")
    group.add_argument("--overwrite", action="store_true",
                       help="empty an existing experiment folder of the same name first (its "
                            "checkpoints, logs, results and predictions)")
    add_report_to_arg(group)
    add_device_arg(group)
    return group


def add_report_to_arg(group):
    from fine_tune.trackers import report_to
    group.add_argument("--report_to", type=report_to, default=("tensorboard",),
                       metavar="TRACKER[,TRACKER]",
                       help="where the run's values go besides train_log.csv and the results "
                            "files: tensorboard, mlflow, wandb (comma-separated) or none. mlflow "
                            "and wandb get the settings, every logged training value, every "
                            "evaluation score and the best checkpoint's scores, in one tracker "
                            "run per experiment that a --resume and later evaluations continue; "
                            "configured by their environment variables (MLFLOW_TRACKING_URI, "
                            "MLFLOW_EXPERIMENT_NAME, WANDB_PROJECT, WANDB_MODE, ...) "
                            "(default: tensorboard)")


def add_teacher_model_args(parser):
    group = parser.add_argument_group("model and data")
    group.add_argument("--ptrain_ver", default="bert-base-uncased",
                       help="pre-trained model: a Hugging Face hub name or a local folder in "
                            "Hugging Face format (works offline)")
    group.add_argument("--num_class", type=positive_int, default=None,
                       help="number of classes (1 for STS-B, a regression); may be left out, "
                            "else must match the task ("
                            + ", ".join(f"{task}: {n}" for task, n in NUM_CLASSES.items()) + ")")
    group.add_argument("--max_seq_len", type=positive_int, default=128,
                       help="pad or truncate each premise-hypothesis pair to this many tokens")
    return group


def index_list(text: str) -> list[int]:
    """'2,4,6' -> [2, 4, 6] (1-based layer indices)."""
    try:
        values = [int(item) for item in text.replace(" ", "").split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers such as 2,4,6; "
                                         f"got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one layer number")
    return values


def add_teacher_ref_args(parser):
    group = parser.add_argument_group("teacher (a fine-tuned experiment)")
    group.add_argument("--teacher_exp", required=True,
                       help="experiment name of the fine-tuned teacher (its --experiment)")
    group.add_argument("--tmodel", default="bert", choices=MODELS, help="the teacher's --model")
    group.add_argument("--tckpt", type=non_negative_int, required=True,
                       help="step of the teacher checkpoint model-<tckpt>.pt")
    add_device_arg(group, "--tdevice_id", "the frozen teacher")
    return group


def add_student_args(parser, student_init=True, width_free=False, same_heads=False):
    """`width_free`: a method whose student may be narrower than the teacher (KD, TinyBERT,
    MiniLM), which then starts from --student_ptrain_ver or at random; `same_heads`: one
    whose heads must still be the teacher's (TinyBERT)."""
    group = parser.add_argument_group("student architecture and initialisation")
    same = ("may differ from the teacher's; the pre-trained model the student starts from "
            "(--student_ptrain_ver) must have it" if width_free else "must equal the teacher's")
    heads = ("must equal the teacher's (the attention loss compares head i with head i); the "
             "pre-trained model the student starts from must have it" if same_heads else same)
    group.add_argument("--num_hidden_layers", type=positive_int, default=6,
                       help="transformer layers of the student")
    group.add_argument("--d_model", type=positive_int, default=768,
                       help=f"hidden size; {same}" + ("" if width_free else
                                                      ", whose layers initialise the student"))
    group.add_argument("--d_ff", type=positive_int, default=3072,
                       help=f"feed-forward inner size; {same}")
    group.add_argument("--num_attention_heads", type=positive_int, default=12,
                       help=f"attention heads per layer; {heads}")
    group.add_argument("--type_vocab_size", type=positive_int, default=2,
                       help="token-type (segment) vocabulary size")
    if student_init:  # partial LAD's initialisation follows its indices instead
        group.add_argument("--student_init", default="even",
                           choices=("even", "first", "random") if width_free else ("even", "first"),
                           help="pre-trained layers copied into the student: 'even' takes layer "
                                "i*k (k = pre-trained layers // student layers) for student layer "
                                "i, 'first' takes layers 1..n"
                                + ("; 'random' copies none (every layer and the pooler start "
                                   "random, BERT's N(0, 0.02))" if width_free else ""))
    if width_free:
        group.add_argument("--student_ptrain_ver", default=None, metavar="MODEL",
                           help="a pre-trained BERT of the student's width, feed-forward size "
                                "and heads (a hub name or a local folder, with the teacher's "
                                "vocabulary; e.g. General TinyBERT 4L-312) whose layers (and, "
                                "with --init_embeddings copy, embeddings) initialise the student "
                                "(default: the teacher's --ptrain_ver, which needs the "
                                "teacher's width)")
    group.add_argument("--init_embeddings", default=None if width_free else "random",
                       choices=("random", "copy"),
                       help="'random' (the LAD authors' setup): the student's word, position and "
                            "token-type embeddings start random (N(0, 0.02)), with a position "
                            "table of the teacher's --max_seq_len rows; 'copy' (our option): copy the pre-trained "
                            "embeddings and their LayerNorm into the student"
                            + (" (default: copy with --student_ptrain_ver, whose embeddings are "
                               "the student's own, else random)" if width_free else ""))
    if width_free:
        parser.resolvers = (*parser.resolvers, _default_embeddings)
    return group


def _default_embeddings(parser, namespace) -> None:
    """--init_embeddings left out: a student from its own pre-trained model keeps that
    model's embeddings (General TinyBERT's, say); one from the teacher's layers starts with
    random ones, as the LAD authors' students do."""
    if namespace.init_embeddings is None:
        namespace.init_embeddings = "copy" if namespace.student_ptrain_ver else "random"


MU_HELP = ("weight of the hidden-state loss, shared by the student's layers (each matched "
           "layer's MSE is weighted mu / num_hidden_layers)")


def add_distillation_loss_args(parser, mu_help=MU_HELP):
    group = parser.add_argument_group("distillation loss")
    group.add_argument("--softmax_temp", type=positive_float, default=None,
                       help="temperature T of the soft-target KL term (scaled by T^2); unused "
                            "for STS-B, a regression")
    group.add_argument("--soft_weight", type=non_negative_float, default=None,
                       help="weight of KL(teacher/T || student/T) (STS-B: of the MSE between "
                            "the student's and the teacher's scores)")
    group.add_argument("--hard_weight", type=non_negative_float, default=None,
                       help="weight of the cross-entropy with the gold labels (STS-B: of the "
                            "MSE with the gold score)")
    if mu_help is not None:
        group.add_argument("--mu", type=non_negative_float, default=None, help=mu_help)
    return group


def add_gate_args(parser):
    group = add_optimizer_args(parser, prefix="gate_", what="gates")
    add_device_arg(group, "--gate_device_id", "the gates")
    group.add_argument("--gate_mode", default="learned", choices=GATE_MODES,
                       help="the ablation of the gates: 'learned' (the authors' method) trains "
                            "them; 'frozen' keeps every gate at its seeded initial weights (no "
                            "gate optimiser, no gate-<step>.pt); 'uniform' fixes z = 1/2 "
                            "everywhere, A_i = LayerNorm(H_i/2 + A_(i-1)/2) with no gate "
                            "parameters. The gate statistics are logged in every mode")
    return group


def per_task(parser, script: str):
    """The flags of task_defaults.PER_TASK that `parser` has default per --task (the row
    of `script` in task_defaults.DEFAULTS): None until parsed, then filled in from the
    table for the parsed --task, unless given; --help lists the values per task."""
    for action in parser._actions:
        if action.dest in task_defaults.PER_TASK:
            assert action.default is None, action.dest  # (None: left out)
            values = task_defaults.describe(script, action.dest)
            action.help += f" (default per --task: {values})" if values else ""
    parser.description += "\n\n" + textwrap.fill(
        "Flags marked 'per --task' default to values for the task: the seed's for MNLI, the "
        "authors' per-task scripts for QNLI, QQP, SST-2, MRPC and RTE, ours for CoLA, STS-B "
        "and WNLI (docs/tasks.md, 'Defaults per task'). A flag given always wins.", 80)
    parser.resolvers = (*parser.resolvers,
                        lambda _, namespace: task_defaults.resolve(namespace, script))
    return parser


def student_parser(description: str, script: str, gates: bool = False, student_init: bool = True,
                   mu_help: str | None = MU_HELP, width_free: bool = False, same_heads: bool = False,
                   **seed_values):
    """The flags every distillation script shares; scripts add their method's own.
    `script` names its row of per-task defaults (task_defaults); `seed_values` are the
    script's seed-command values of other flags where they differ from LAD's. `mu_help`
    None: a method without --mu (KD)."""
    parser = new_parser(description)
    add_experiment_args(parser)
    add_teacher_ref_args(parser)
    add_student_args(parser, student_init, width_free, same_heads)
    add_training_args(parser, ckpt_step=2000, log_step=200)
    add_optimizer_args(parser)
    if gates:
        add_gate_args(parser)
    add_distillation_loss_args(parser, mu_help=mu_help)
    unknown = set(seed_values) - {action.dest for action in parser._actions}
    assert not unknown, f"no such flags: {unknown}"
    assert not set(seed_values) & set(task_defaults.PER_TASK), "those are in task_defaults"
    parser.set_defaults(**seed_values)
    return per_task(parser, script)


def add_eval_args(parser, splits, batch_size=512, tasks=TRAINABLE_TASKS):
    add_experiment_args(parser, reads=True, tasks=tasks)
    group = parser.add_argument_group("evaluation")
    group.add_argument("--dataset", required=True, choices=splits,
                       help="split (MNLI: " + ", ".join(s for s in splits if "_" in s or s == "train")
                            + "; the other tasks: " + ", ".join(s for s in splits if "_" not in s)
                            + ")")
    group.add_argument("--batch_size", type=positive_int, default=batch_size,
                       help="examples per forward pass on a GPU; on the CPU at most 32, where "
                            "larger passes only run slower (the outputs are the same)")
    add_amp_arg(group, training=False)
    add_device_arg(group)
    return group


def teacher_parser():
    parser = new_parser("Fine-tune a pre-trained BERT teacher on a GLUE task.")
    add_experiment_args(parser)
    add_teacher_model_args(parser)
    add_training_args(parser)
    add_optimizer_args(parser)
    return per_task(parser, "teacher")


def find_task(parser, namespace) -> None:
    """--task left out of an evaluation or prediction: the task of the one experiment named
    --experiment (for --model, under --exp_dir); among several, those with a split
    --dataset (an MNLI experiment's test split 'test' is AX's); still several: one line
    naming them. None: mnli, whose not-found message then says what was searched (or, for
    a folder's name such as LAD_bert_rte, that folder's task, whose message names the fix)."""
    if namespace.task is not None:
        return
    tasks = next(action.choices for action in parser._actions if action.dest == "task")
    folder = Path(namespace.exp_dir)
    found = [task for task in tasks if (folder / f"{namespace.experiment}_{namespace.model}_"
                                        f"{get_task(task).trained_as}" / "config.json").is_file()]
    dataset = getattr(namespace, "dataset", None)  # (export has none)
    fitting = [task for task in found if dataset in get_task(task).files] or found
    if len(fitting) > 1:
        named = [task + (f" (its {get_task(task).model_task.upper()} experiment)"
                         if get_task(task).model_task else "") for task in fitting]
        with_split = f" (each with a split {dataset})" if fitting != found else ""
        parser.error(f"experiment {namespace.experiment!r} exists for tasks {', '.join(named)}"
                     f"{with_split} under --exp_dir {namespace.exp_dir}: pass --task")
    folder_name = [task for task in tasks
                   if namespace.experiment.endswith(f"_{namespace.model}_{task}")]
    namespace.task = (fitting or folder_name or ["mnli"])[0]


def eval_parser():
    parser = new_parser("Evaluate every checkpoint of an experiment on a labelled split: every "
                        "metric of the task per checkpoint (MNLI: accuracy, macro-F1; QQP, "
                        "MRPC: F1, accuracy; CoLA: Matthews correlation; STS-B: Pearson, "
                        "Spearman; the others: accuracy), and the best one by the first.")
    group = add_eval_args(parser, LABELED_SPLITS)
    group.add_argument("--ckpt", type=step_or_best, default=None, metavar="STEP|best",
                       help="evaluate only the checkpoint model-<STEP>.pt, or 'best': the one "
                            "with the best first metric on the task's dev split (MNLI: "
                            "dev_matched; fp32 scores preferred over bf16 ones of the same step; "
                            "the earliest on a tie). Either way the rows are merged into "
                            "results_<dataset>.csv, replacing only rows of the same step and "
                            "--amp (default: every checkpoint on disk; rows of pruned "
                            "checkpoints are kept)")
    add_report_to_arg(group)
    parser.resolvers = (find_task,)
    return parser


def predict_parser():
    parser = new_parser("Write the GLUE test-server submission file of one checkpoint.")
    group = add_eval_args(parser, TEST_SPLITS, batch_size=256, tasks=TASKS)
    group.add_argument("--ckpt", type=step_or_best, required=True, metavar="STEP|best",
                       help="step of the checkpoint model-<STEP>.pt to predict with, or 'best': "
                            "the best on the task's dev split, as run_fine_tune_eval.py --ckpt "
                            "best and fine_tune.submit choose it (written to "
                            "predictions/<that step>/)")
    parser.resolvers = (find_task,)
    return parser



def probing_parser():
    parser = student_parser("Partial LAD: gate only the teacher layers named by --gate_indices "
                            "and match the remaining student layers to raw teacher layers.",
                            "probing", gates=True, student_init=False)
    group = parser.add_argument_group("probing")
    group.add_argument("--probing_exp", default="partial_lad", choices=("partial_lad",),
                       help="probing experiment to run")
    group.add_argument("--gate_indices", type=index_list, default="2,4,6,8,10",
                       help="teacher layers (1-based, comma-separated, increasing) whose gated "
                            "aggregates A_i are distilled")
    group.add_argument("--student_indices", type=index_list, default="1,2,3,4,5,6",
                       help="student layers (1-based); the first len(--gate_indices) are matched "
                            "to those aggregates, and initialised from those pre-trained layers")
    return parser


def alp_parser():
    parser = student_parser("ALP-KD: each student layer learns an attention-weighted mix of "
                            "teacher layers.", "alp", seed=65, log_step=100)
    parser.add_argument_group("ALP-KD").add_argument(
        "--alp_exp", default="alp-kd-hidden-v2", choices=ALP_VARIANTS,
        help="variant: attention on [CLS] over all teacher layers (alp-kd), at every position "
             "(alp-kd-hidden), or at every position over teacher layers 1..j*k only (-v2)")
    return parser


def pkd_parser():
    parser = student_parser("BERT-PKD: student layer j learns teacher layer j*k. The teacher "
                            "runs on --tdevice_id and the student on --device_id.", "pkd",
                            mu_help="weight of the hidden-state loss: with --pkd_loss mse each "
                                    "matched layer's MSE is weighted mu / num_hidden_layers; with "
                                    "pkd-skip it is beta of the original PKD code: mu times the "
                                    "mean squared difference of the normalised [CLS] vectors "
                                    "over batch, layers and hidden size")
    group = parser.add_argument_group("BERT-PKD")
    group.add_argument(
        "--pkd_loss", default="mse", choices=PKD_LOSSES,
        help="'mse': the LAD authors' version, MSE over the whole sequence against teacher layers "
             "k, 2k, .., L; 'pkd-skip': the original PKD-Skip loss on L2-normalised [CLS] vectors "
             "against teacher layers k, .., (n-1)k, a mean weighted by --mu, as in the PKD "
             "authors' code")
    group.add_argument(
        "--layer_map", default="uniform", choices=LAYER_MAPS,
        help="which teacher layers the student's layers learn: 'uniform' those above (k, 2k, "
             "..); 'last' only the student's last layer the teacher's last (Ko et al. 2023's "
             "control; --pkd_loss mse); 'random' a new sorted random set of as many distinct "
             "teacher layers every epoch, seeded by --seed (RAIL-KD's random layer selection, "
             "Haidar et al. 2022, with this loss)")
    return parser


def kd_parser():
    return student_parser(
        "Vanilla KD (Hinton et al. 2015): the student learns the teacher's softened outputs "
        "and the gold labels, with no layer loss. --soft_weight 0 is the labels-only floor: "
        "the teacher runs no forward pass.", "kd", mu_help=None, width_free=True)


def tinybert_parser():
    parser = student_parser(
        "TinyBERT's task-specific distillation (Jiao et al. 2020), without data augmentation: "
        "MSE of embeddings, hidden states (through a learnt projection when the widths "
        "differ) and pre-softmax attention scores, student layer m to teacher layer m*k, "
        "plus the prediction layer's soft loss.", "tinybert", width_free=True, same_heads=True,
        mu_help="weight of every intermediate term (embeddings, hidden states, attention "
                "scores); the authors sum them unweighted (1)")
    group = parser.add_argument_group("TinyBERT")
    group.add_argument(
        "--intermediate_step", type=non_negative_int, default=0, metavar="N",
        help="the authors' two stages in one run: steps 1..N (counted in steps, also with "
             "--epoch) train the intermediate terms only, the remaining steps the prediction "
             "terms only, each stage with fresh AdamW moments and its own warmup (the warmup "
             "split in proportion to the stages' lengths) and decay from the one --lr (the "
             "authors' two runs each had their own rate); 0: one stage, every term together")
    group.add_argument(
        "--projection", default="auto", choices=("auto", "always"),
        help="the learnable projection W of the student's hidden states and embeddings to "
             "the teacher's width: 'auto' only when the widths differ (the identity "
             "otherwise); 'always' also when they are equal, as the authors' code does")
    return parser


def minilm_parser():
    parser = student_parser(
        "MiniLM-style self-attention relation distillation (MiniLMv2, Wang et al. 2021): KL "
        "between the teacher's and the student's query-query, key-key and value-value "
        "relations of one teacher layer and the student's last layer, plus the logit loss.",
        "minilm", width_free=True,
        mu_help="weight of each of the three relation terms (1: their sum, as in the paper)")
    group = parser.add_argument_group("MiniLM")
    group.add_argument("--minilm_teacher_layer", type=positive_int, default=None, metavar="LAYER",
                       help="the teacher layer (1-based) whose relations the student's last "
                            "layer learns (default: the teacher's last)")
    group.add_argument("--relation_heads", type=positive_int, default=None,
                       help="relation heads r: the concatenated heads' queries, keys and values "
                            "are split into r parts of width/r; r must divide the student's and "
                            "the teacher's widths (default: the teacher's attention heads)")
    return parser


def lad_parser():
    return student_parser(
        "LAD: distil a fine-tuned teacher into a smaller BERT. Chained highway gates aggregate "
        "teacher layers (A_1 = H_1, A_i = Gate_i(A_(i-1), H_i)); student layer j learns A_(j*k).",
        "lad", gates=True)


def lad_no_parser():
    return student_parser(
        "LAD-NO: like LAD, but each student layer j learns one unchained gate over teacher "
        "layers j*k-1 and j*k.", "lad_no", gates=True)


def main(parser, target: str) -> None:
    """An entry script: parse the flags, and only then import `target` ("module:function",
    which brings in torch and transformers) and run it."""
    settings = Settings(**vars(parser.parse_args()))  # read-only from here on
    module, function = target.split(":")
    run_cli(lambda args: getattr(importlib.import_module(module), function)(args), settings)
