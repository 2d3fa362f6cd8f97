"""Training, evaluation and prediction throughput of every method, and LAD against a step
that follows the authors' published approach.

    python bench/bench_train.py --size small            # seconds on a CPU
    python bench/bench_train.py --size seed --device_id 0 --amp bf16

Each measurement runs the project's real training step (`fine_tune.training.training_step`)
on random-weight models of the chosen size, with token ids from the demo data set. For
LAD it also runs, in the same process and on the same inputs, a baseline step written the
way the authors' code (IKMLab/LAD, transformers 3.3.1) works: the teacher's and the
student's tokenizer each encode the batch every step (padded to max_seq_len), eager
attention (that transformers has no SDPA) with attention weights returned, fp32, one
`backward(retain_graph=True)` per loss term with `.item()` read from each, and a
host-synchronising all-zeros check inside each gate. The first step of both is checked to
give the same loss and gradients (in fp32; dropout off on CUDA, whose fused attention draws
its own random numbers); then the two steps are timed in turn, step by step, and
the ratio of their median step times is reported. Step times are medians (a shared machine
has slow spells). Results are printed as a table and written as CSV and JSON, with the
machine, torch version and settings. This is a benchmark, not a test.
"""
import argparse
import copy
import csv
import itertools
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fine_tune.alp import ALPObjective  # noqa: E402
from fine_tune.cli import lad_parser  # noqa: E402
from fine_tune.data import read_split, tokenize  # noqa: E402
from fine_tune.demo_data import demo_texts, write_demo_mnli, write_tiny_bert  # noqa: E402
from fine_tune.distillation import layer_stride  # noqa: E402
from fine_tune.evaluation import predict  # noqa: E402
from fine_tune.lad import (GatedObjective, lad_no_targets, lad_targets,  # noqa: E402
                           partial_lad_targets)
from fine_tune.modeling import build_classifier, load_tokenizer, resolve_device  # noqa: E402
from fine_tune.pkd import PKDObjective  # noqa: E402
from fine_tune.training import (FineTuning, TrainingRun, accumulate_gradients,  # noqa: E402
                                make_groups, training_step)

SIZES = {  # teacher layers / width / heads / ffn, student layers, batch, length, vocabulary
    "tiny": dict(teacher_layers=4, d_model=32, heads=2, d_ff=64, student_layers=2,
                 batch_size=8, max_seq_len=32, vocab_size=None),  # dry runs only
    "small": dict(teacher_layers=12, d_model=64, heads=2, d_ff=256, student_layers=6,
                  batch_size=32, max_seq_len=128, vocab_size=None),
    "seed": dict(teacher_layers=12, d_model=768, heads=12, d_ff=3072, student_layers=6,
                 batch_size=32, max_seq_len=128, vocab_size=30522),
}
METHODS = ("teacher", "lad", "lad_no", "partial_lad", "alp-kd", "alp-kd-hidden",
           "alp-kd-hidden-v2", "pkd")
LABELS3 = {0: "contradiction", 1: "entailment", 2: "neutral"}


def bert_config(size, layers, vocab_size):
    return {"model_type": "bert", "vocab_size": size["vocab_size"] or vocab_size,
            "hidden_size": size["d_model"], "num_hidden_layers": layers,
            "num_attention_heads": size["heads"], "intermediate_size": size["d_ff"],
            "max_position_embeddings": 512, "type_vocab_size": 2, "id2label": LABELS3,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


def run_args(size, method, amp, compile_=False):
    """The seed's LAD flags, as run_lad_distil.py parses them, for this size. (The other
    methods' seed values differ in learning rates and loss weights only, not in speed.)"""
    args = lad_parser().parse_args(["--experiment", "bench", "--teacher_exp", "bench", "--tckpt", "0",
                                    "--num_hidden_layers", str(size["student_layers"]), "--amp", amp]
                                   + ["--compile"] * compile_)
    args.alp_exp, args.pkd_loss = method, "mse"
    return args


def objective_for(method, args, L, n, device, d, max_len):
    if method == "teacher":
        return FineTuning()
    if method in ("lad", "lad_no", "partial_lad"):
        k = layer_stride(L, n)
        targets = {"lad": lambda: lad_targets(L, n), "lad_no": lambda: lad_no_targets(L, n),
                   "partial_lad": lambda: partial_lad_targets(
                       L, n, list(range(k, L - k + 1, k)), list(range(1, n + 1)))}[method]()
        return GatedObjective(args, targets, device, device, d, max_len)
    if method.startswith("alp"):
        return ALPObjective(args, L, device)
    return PKDObjective(args, L, device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Ops that only describe a tensor (views, shapes, allocation): no kernel.
METADATA_OPS = {
    "aten::view", "aten::reshape", "aten::as_strided", "aten::t", "aten::transpose", "aten::permute",
    "aten::expand", "aten::slice", "aten::select", "aten::unsqueeze", "aten::squeeze", "aten::detach",
    "aten::alias", "aten::empty", "aten::empty_strided", "aten::_unsafe_view", "aten::unflatten",
    "aten::split", "aten::chunk", "aten::narrow", "aten::resolve_conj", "aten::resolve_neg",
    "aten::lift_fresh", "aten::result_type", "aten::_reshape_alias", "aten::empty_like",
    "aten::view_as", "aten::expand_as", "aten::unbind", "aten::tensor_split",
    "aten::split_with_sizes", "aten::flatten", "aten::movedim", "aten::detach_", "aten::is_same_size",
    "aten::_has_compatible_shallow_copy_type", "aten::to", "aten::squeeze_", "aten::unsqueeze_",
    "aten::is_nonzero", "aten::dim", "aten::size", "aten::stride", "aten::numel", "aten::contiguous"}
# Ops autocast wraps: a cast inside one of them is autocast's (a kernel on every device);
# a cast inside any other op is that CPU kernel's own conversion (CUDA converts in-kernel).
AUTOCAST_OPS = {
    "aten::linear", "aten::matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm",
    "aten::scaled_dot_product_attention", "aten::layer_norm", "aten::softmax", "aten::log_softmax",
    "aten::mse_loss", "aten::cross_entropy_loss", "aten::nll_loss", "aten::kl_div", "aten::embedding"}


def dispatched_ops(step) -> tuple[int, dict]:
    """How many ops one call of `step` dispatches, counted with torch.profiler: a
    hardware-independent stand-in for the kernels a GPU would launch. Counted: every aten
    op called from Python or by the autograd engine (not the ops a kernel calls inside
    itself), every real cast or copy (autocast's casts and .to()), and a foreach op once;
    not counted: view and shape ops, eval-mode dropout (returns its input), a Python
    number wrapped as a tensor, a CPU kernel's own dtype conversions, and the optimiser
    step (one fused AdamW kernel per group on CUDA; a loop over parameters on the CPU).
    Returns the total and the count per op."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    counts = {}
    for event in prof.events():
        name = event.name
        if not name.startswith("aten::") or name in METADATA_OPS:
            continue
        above = []
        parent = event.cpu_parent
        while parent is not None:
            above.append(parent.name)
            parent = parent.cpu_parent
        if any(a.startswith("Optimizer.step") for a in above):
            continue
        if any(a.startswith(("aten::_foreach", "aten::_fused")) for a in above):
            continue  # part of a foreach op, counted once as itself
        if name == "aten::dropout" and not any(c.name.startswith("aten::") for c in event.cpu_children):
            continue
        owner = next((a for a in above if a.startswith("aten::") and a not in METADATA_OPS), None)
        if name == "aten::_to_copy":
            if owner is not None and owner not in AUTOCAST_OPS or "aten::_to_copy" in above:
                continue
            if owner == "aten::scaled_dot_product_attention" or any(
                    a == "aten::scaled_dot_product_attention" for a in above):
                continue  # the CPU's math attention (one fused kernel on CUDA)
            if event.input_shapes and event.input_shapes[0] == []:
                continue  # a Python number
        elif owner is not None:
            continue
        counts[name] = counts.get(name, 0) + 1
    return sum(counts.values()), counts


def timed_steps(steps_to_time, steps, warmup, device):
    """Median seconds per step of each callable. They run in turn, step by step, so a slow
    spell of a shared machine hits them alike; the median ignores outlier steps."""
    for _ in range(warmup):
        for step in steps_to_time:
            step()
    times = [[] for _ in steps_to_time]
    for _ in range(steps):
        for step, seconds in zip(steps_to_time, times):
            sync(device)
            started = time.perf_counter()
            step()
            sync(device)
            seconds.append(time.perf_counter() - started)
    return [statistics.median(seconds) for seconds in times]


def train_flops(config_student, config_teacher, tokens, distil):
    """Model FLOPs of one step: 6 per parameter per token for the trained model, 2 for a
    forward-only teacher, plus attention's matmuls (12 * layers * length * width per token)."""
    def params(c):
        layer = 12 * c["hidden_size"] ** 2 + 2 * c["hidden_size"] * (c["intermediate_size"] - 4 * c["hidden_size"])
        return c["num_hidden_layers"] * layer

    def attention(c, length):
        return 2 * 2 * c["num_hidden_layers"] * length * c["hidden_size"]
    length = tokens[1]
    total = 6 * (params(config_student) + attention(config_student, length)) * tokens[0] * length
    if distil:
        total += 2 * (params(config_teacher) + attention(config_teacher, length)) * tokens[0] * length
    return total


def eager_copy(model):
    """The same model and weights with transformers' eager (non-SDPA) attention."""
    config = BertConfig.from_dict(model.config.to_dict(), attn_implementation="eager")
    copy_ = BertForSequenceClassification(config).to(model.device)
    copy_.load_state_dict(model.state_dict())
    return copy_.train(model.training).requires_grad_(any(p.requires_grad for p in model.parameters()))


class AuthorsLADStep:
    """One LAD step the way the authors' code does it (see the module docstring)."""

    def __init__(self, student, gates, teacher, tokenizer, examples, args, size, device):
        # transformers 3.3.1 (the authors' pin) has no SDPA: BERT's attention is eager.
        self.student, self.teacher = eager_copy(student), eager_copy(teacher)
        self.tokenizer = tokenizer
        self.gates, self.args, self.size, self.device = gates, args, size, device
        self.premises, self.hypotheses = examples.premise, examples.hypothesis
        self.labels = torch.as_tensor(examples.labels)
        self.groups = make_groups(TrainingRun(args, None, self.student, device, gates, None))

    def loss_and_backward(self, rows):
        args, n = self.args, self.size["student_layers"]
        # The teacher's and the student's tokenizer each encode the batch, every step.
        batches = [{k: v.to(self.device) for k, v in self.encode(rows).items()} for _ in range(2)]
        labels = self.labels[rows].to(self.device)
        with torch.no_grad():  # their models also return every layer's attention weights
            teacher_out = self.teacher(**batches[0], output_hidden_states=True, output_attentions=True)
        student_out = self.student(**batches[1], output_hidden_states=True, output_attentions=True)
        T = args.softmax_temp
        logits_loss = args.hard_weight * F.cross_entropy(student_out.logits, labels) + \
            args.soft_weight * T * T * F.kl_div(F.log_softmax(student_out.logits / T, -1),
                                                F.softmax(teacher_out.logits / T, -1),
                                                reduction="batchmean")
        logits_loss.item()  # each term is read for the progress bar: a host sync
        logits_loss.backward(retain_graph=True)
        total = logits_loss.detach()
        hidden = teacher_out.hidden_states[1:]
        previous, aggregates = torch.zeros_like(hidden[0]), []
        for i, h in enumerate(hidden):
            if torch.all(torch.eq(previous, 0)):  # host sync, as in the authors' gate
                aggregate = h
            else:
                aggregate = self.gates.gates[i - 1](previous, h)
            aggregates.append(aggregate)
            previous = aggregate
        k = layer_stride(len(hidden), n)
        for j in range(1, n + 1):
            loss = args.mu / n * F.mse_loss(student_out.hidden_states[j], aggregates[j * k - 1])
            loss.item()
            loss.backward(retain_graph=True)
            total = total + loss.detach()
        return total

    def encode(self, rows):
        return self.tokenizer([self.premises[i] for i in rows], [self.hypotheses[i] for i in rows],
                              padding="max_length", truncation=True,
                              max_length=self.size["max_seq_len"], return_tensors="pt")

    def step(self, rows):
        self.loss_and_backward(rows)
        for group in self.groups:
            group.step()


def measure_method(method, size_name, device, amp, steps, warmup, assets, compile_=False):
    size = SIZES[size_name]
    tokenizer, examples, data = assets
    L, n, d, max_len = size["teacher_layers"], size["student_layers"], size["d_model"], size["max_seq_len"]
    args = run_args(size, method, amp, compile_)
    torch.manual_seed(0)
    teacher_config = bert_config(size, L, len(tokenizer))
    teacher = build_classifier(teacher_config).to(device).eval().requires_grad_(False)
    distil = method != "teacher"
    # The authors'-approach comparison needs an fp32 teacher (under --amp bf16 the run casts
    # its own to bf16); kept on the CPU until then, so the peak memory is the run's alone.
    teacher_fp32 = copy.deepcopy(teacher).cpu() if method == "lad" and not compile_ else None
    student_config = bert_config(size, n if distil else L, len(tokenizer))
    student = build_classifier(student_config).to(device)
    objective = objective_for(method, args, L, n, device, d, max_len)
    run = TrainingRun(args, None, student, device, objective, data,
                      teacher if distil else None, device if distil else None)
    groups = make_groups(run)
    batches = [torch.arange(i * size["batch_size"], (i + 1) * size["batch_size"]) % len(data)
               for i in range(steps + warmup + 1)]
    position = itertools.count()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    [seconds] = timed_steps([lambda: training_step(run, groups, batches[next(position) % len(batches)], 1)],
                            steps, warmup, device)
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    ops, _ = dispatched_ops(lambda: training_step(run, groups, batches[0], 1))
    row = {"what": f"train {method}" + (" (compiled)" if args.compile else ""),
           "examples_per_s": size["batch_size"] / seconds, "ms_per_step": 1000 * seconds,
           "peak_memory_mb": memory / 2 ** 20, "ops_per_step": ops}
    flops = train_flops(student_config, teacher_config, (size["batch_size"], max_len), distil)
    row["tflops_per_s"] = flops / seconds / 1e12
    rows = [row]
    if method == "lad" and not args.compile:
        rows.append(compare_with_authors(run, teacher_fp32, student, objective, tokenizer, examples,
                                         data, args, size, device, steps, warmup))
    return rows


def compare_with_authors(run, teacher, student, objective, tokenizer, examples, data, args, size,
                         device, steps, warmup):
    """The first step of both approaches from the same state; then their throughput."""
    fresh = copy.deepcopy
    teacher = teacher.to(device)
    ours_run = TrainingRun(run.args, None, fresh(student), device, fresh(objective), data,
                           fresh(teacher), device)
    base = AuthorsLADStep(fresh(student), fresh(objective), teacher, tokenizer, examples, args,
                          size, device)
    base.student.load_state_dict(ours_run.model.state_dict())
    base.gates.load_state_dict(ours_run.objective.state_dict())
    # The check compares like with like: fp32 on both sides (the authors' step has no bf16).
    # On the CPU, SDPA's dropout draws the same random numbers as eager attention's, so the
    # check keeps dropout on; CUDA's fused attention kernels draw their own, so it is off there.
    check_args = argparse.Namespace(**vars(args) | {"amp": "fp32"})
    check_run = TrainingRun(check_args, None, ours_run.model, device, ours_run.objective, data,
                            teacher, device)
    dropout = device.type == "cpu"
    check_run.model.train(dropout)
    base.student.train(dropout)
    rows = torch.arange(size["batch_size"])
    torch.manual_seed(1)
    our_loss = float(sum(accumulate_gradients(check_run, rows, 1).values()))
    torch.manual_seed(1)
    base_loss = float(base.loss_and_backward(rows.tolist()))
    check_run.model.train()
    base.student.train()
    # Relative L2 distance of all gradients (student and gates): per-tensor ratios would be
    # dominated by tensors whose true gradient is zero (e.g. attention key biases).
    ours_grads = [p.grad for m in (ours_run.model, ours_run.objective) for p in m.parameters()]
    base_grads = [p.grad for m in (base.student, base.gates) for p in m.parameters()]
    diff = sum(float((a - b).pow(2).sum()) for a, b in zip(ours_grads, base_grads) if a is not None)
    norm = sum(float(b.pow(2).sum()) for b in base_grads if b is not None)
    worst = (diff / norm) ** 0.5
    same = abs(our_loss - base_loss) <= 1e-4 * abs(base_loss) and worst < 1e-3
    # Time both again, in turn, from here on: the ratio is not skewed by drift on a shared machine.
    ours_groups = make_groups(ours_run)
    for model in (ours_run.model, ours_run.objective, base.student, base.gates):
        model.zero_grad(set_to_none=True)
    batches = [torch.arange(i * size["batch_size"], (i + 1) * size["batch_size"]) % len(data)
               for i in range(steps + warmup)]
    ours_position, base_position = itertools.count(), itertools.count()
    ours_seconds, seconds = timed_steps(
        [lambda: training_step(ours_run, ours_groups, batches[next(ours_position) % len(batches)], 1),
         lambda: base.step(batches[next(base_position) % len(batches)].tolist())],
        steps, warmup, device)
    row = {"what": "train lad, authors' approach", "examples_per_s": size["batch_size"] / seconds,
           "ms_per_step": 1000 * seconds,
           "speedup_of_ours": seconds / ours_seconds, "ms_per_step_ours_alongside": 1000 * ours_seconds,
           "first_step_loss_ours": our_loss, "first_step_loss_authors": base_loss,
           "relative_grad_difference": worst, "same_loss_and_gradients": same,
           "dropout_in_check": dropout}
    return row


def measure_inference(size_name, device, amp, assets, batch_size):
    size = SIZES[size_name]
    tokenizer, _, data = assets
    rows = []
    for name, layers in (("teacher", size["teacher_layers"]), ("student", size["student_layers"])):
        model = build_classifier(bert_config(size, layers, len(tokenizer))).to(device)
        predict(model, data, batch_size, device, amp=amp == "bf16")  # warm-up
        sync(device)
        started = time.perf_counter()
        predict(model, data, batch_size, device, amp=amp == "bf16")
        sync(device)
        seconds = time.perf_counter() - started
        rows.append({"what": f"evaluate/predict {name}", "examples_per_s": len(data) / seconds})
    return rows


def matmul_tflops(device, dtype, n=None, repeats=20) -> float:
    """The dense matmul rate this device reaches in `dtype` (TFLOP/s), for MFU. A CPU's
    bf16 matmul without bf16 matrix instructions is emulated at about 1 GFLOP/s, the same
    at 256 as at 1024 wide, so it is measured at 256 there (23 products of 1024 took 51 s
    on the 2-core development machine, of 256 under a second)."""
    if n is None:
        n = 8192 if device.type == "cuda" else 256 if dtype == torch.bfloat16 else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e12


def attention_kernel(device, dtype, size) -> str:
    """Which scaled-dot-product-attention implementation runs for a BERT layer's shapes
    with our boolean padding mask (the profiler's name of the op SDPA dispatches to)."""
    from torch.profiler import ProfilerActivity, profile
    heads, length = size["heads"], size["max_seq_len"]
    shape = (size["batch_size"], heads, length, size["d_model"] // heads)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.ones(size["batch_size"], 1, 1, length, dtype=torch.bool, device=device)
    mask[:, :, :, length // 2:] = False
    mask = mask.expand(-1, 1, length, -1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.1).sum().backward()
    names = {e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")}
    return ", ".join(sorted(names)) or "?"


def prepare(workdir: Path, size_name: str, examples_needed: int):
    data_dir = workdir / "data"
    write_demo_mnli(data_dir, sizes={"train": max(examples_needed, 2000), "dev_matched": 2000})
    bert = write_tiny_bert(workdir / "bert", demo_texts(data_dir))
    tokenizer = load_tokenizer(bert)
    examples = read_split(data_dir, "mnli", "train")
    data = tokenize(examples, tokenizer, SIZES[size_name]["max_seq_len"])
    dev = tokenize(read_split(data_dir, "mnli", "dev_matched"), tokenizer, SIZES[size_name]["max_seq_len"])
    return (tokenizer, examples, data), (tokenizer, None, dev)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small", help="model and batch sizes")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, from {METHODS}")
    parser.add_argument("--device_id", type=int, default=-1, help="CUDA device, -1 for the CPU")
    parser.add_argument("--amp", choices=("fp32", "bf16"), default="fp32", help="autocast dtype")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--eval_batch_size", type=int, default=512, help="batch size of inference")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak dense TFLOP/s for the dtype, for MFU (H100 SXM: 989 bf16, 67 fp32)")
    parser.add_argument("--compile_methods", default="",
                        help="also time these methods with --compile (comma-separated; e.g. "
                             "teacher,lad); on a CPU compiling takes minutes and is not faster")
    parser.add_argument("--measure_peak", action="store_true",
                        help="time a large matmul in the --amp dtype and use its rate for MFU "
                             "(when --peak_tflops is not given)")
    parser.add_argument("--out", default="bench/results", help="folder for the CSV and JSON")
    args = parser.parse_args()
    device = resolve_device(args.device_id)  # fp32 means fp32 (no TF32), as in the scripts
    size = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        train_assets, eval_assets = prepare(Path(tmp), args.size,
                                            size["batch_size"] * (args.steps + args.warmup + 1))
        results = []
        runs = [(method, False) for method in args.methods.split(",") if method]
        runs += [(method, True) for method in args.compile_methods.split(",") if method]
        for method, compile_ in runs:
            started = time.perf_counter()
            for row in measure_method(method, args.size, device, args.amp, args.steps, args.warmup,
                                      train_assets, compile_):
                if compile_:  # includes compiling, in the warm-up steps
                    row["seconds_with_compilation"] = time.perf_counter() - started
                results.append(row)
                print(json.dumps(row), flush=True)
        results += measure_inference(args.size, device, args.amp, eval_assets, args.eval_batch_size)
    peak = args.peak_tflops
    if peak is None and args.measure_peak:
        peak = matmul_tflops(device, torch.bfloat16 if args.amp == "bf16" else torch.float32)
        results.append({"what": f"measured {args.amp} matmul rate, TFLOP/s", "tflops_per_s": peak})
    for row in results:
        if peak and "tflops_per_s" in row and row["what"].startswith("train"):
            row["mfu"] = row["tflops_per_s"] / peak
    results.append({"what": "attention kernel (SDPA) at these sizes", "kernel": attention_kernel(
        device, torch.bfloat16 if args.amp == "bf16" else torch.float32, size)})
    by_name = {row["what"]: row for row in results}
    if "train teacher" in by_name and "train lad" in by_name:
        # The seed's pipeline: 36,816 teacher steps, then 49,088 LAD steps.
        hours = (36816 * by_name["train teacher"]["ms_per_step"] +
                 49088 * by_name["train lad"]["ms_per_step"]) / 1000 / 3600
        # Only --size seed has the seed's models; other sizes project their own toy models.
        results.append({"what": f"seed's steps (teacher + LAD), {args.size} size, hours",
                        "hours": hours})
    machine = {"platform": platform.platform(), "processor": platform.processor(),
               "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    settings = vars(args) | {"sizes": size}
    report(results, machine, settings, Path(args.out))


def report(results, machine, settings, out: Path):
    print(f"\nmachine: {machine}\nsettings: {settings}\n")
    columns = ["what", "examples_per_s", "ms_per_step", "ops_per_step", "peak_memory_mb",
               "tflops_per_s", "mfu", "speedup_of_ours", "same_loss_and_gradients", "hours", "kernel"]
    width = {"what": 48}
    print("".join(f"{c:>{width.get(c, 16)}} " for c in columns))
    for row in results:
        cells = []
        for c in columns:
            value = row.get(c, "")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            cells.append(f"{text:>{width.get(c, 16)}} ")
        print("".join(cells))
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{settings['size']}-{machine['device'].replace(' ', '_')}-{settings['amp']}"
    (out / f"{stem}.json").write_text(json.dumps({"machine": machine, "settings": settings,
                                                  "results": results}, indent=2, default=str))
    with open(out / f"{stem}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sorted({k for r in results for k in r}))
        writer.writeheader()
        writer.writerows(results)
    print(f"\nwritten to {out / stem}.json and .csv")


if __name__ == "__main__":
    main()
