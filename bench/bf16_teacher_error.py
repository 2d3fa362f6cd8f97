"""How exact the frozen teacher is under --amp bf16, and how fast its forward pass is.

    python bench/bf16_teacher_error.py --repeats 0 --threads 1     # the errors only, 12 layers, 256 wide
    python bench/bf16_teacher_error.py --batch_size 8 --repeats 5   # and the forward-pass times

On a random-weight BERT it compares, against the fp32 forward pass, three bf16 teachers:
cast whole to bf16 (`model.to(torch.bfloat16)`, the code before issue 18), the project's
`fine_tune.modeling.bf16_teacher` (bf16 Linears, fp32 embeddings, LayerNorms and residual
stream), and fp32 weights under `torch.autocast(dtype=torch.bfloat16)`. It prints the
per-element MSE and the relative error ||h - h_fp32|| / ||h_fp32|| of the last layer's
hidden state and of the logits, whether bf16_teacher's outputs equal autocast's bitwise,
and the median time of each forward pass (run in turn, pass by pass, so that all see the
same machine conditions). This is a benchmark, not a test (tests/test_bf16_teacher.py is).
"""
import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fine_tune.modeling import bf16_teacher, prepared_attention_mask  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=256, help="hidden size (heads: width / 64)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed forward passes of each (median); 0: the errors only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device_id", type=int, default=-1, help="CUDA device, -1 for the CPU")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu") if args.device_id < 0 else torch.device("cuda", args.device_id)

    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=30522, hidden_size=args.width, num_hidden_layers=args.layers,
                        num_attention_heads=max(args.width // 64, 1), intermediate_size=4 * args.width,
                        max_position_embeddings=max(512, args.max_seq_len), num_labels=3,
                        attn_implementation="sdpa")
    fp32 = BertForSequenceClassification(config).requires_grad_(False).eval().to(device)
    ids = torch.randint(1000, 30522, (args.batch_size, args.max_seq_len), device=device)
    lengths = torch.randint(args.max_seq_len // 4, args.max_seq_len + 1, (args.batch_size, 1), device=device)
    mask = (torch.arange(args.max_seq_len, device=device) < lengths).long()  # padded rows, as GLUE pairs
    inputs = prepared_attention_mask({"input_ids": ids, "attention_mask": mask,
                                      "token_type_ids": torch.zeros_like(ids)})

    teachers = {  # name: (model, under autocast)
        "fp32": (fp32, False),
        "whole-model cast (before)": (copy.deepcopy(fp32).to(torch.bfloat16), False),
        "bf16_teacher (now)": (bf16_teacher(copy.deepcopy(fp32)), False),
        "fp32 weights under autocast": (fp32, True),
    }

    def forward(name):
        model, autocast = teachers[name]
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(**inputs, output_hidden_states=True)

    outputs = {name: forward(name) for name in teachers}  # (also the warm-up)
    times = {name: [] for name in teachers}
    for _ in range(args.repeats):
        for name in teachers:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            forward(name)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)

    reference = outputs["fp32"]
    print(f"random BERT, {args.layers} layers, {args.width} wide, batch {args.batch_size} x "
          f"{args.max_seq_len} tokens (padded rows); {device_name(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print()
    print(f"| teacher | layer {args.layers} MSE | layer {args.layers} relative error | logits MSE | "
          "logits relative error | forward, ms (median) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, out in outputs.items():
        ms = f"{1000 * statistics.median(times[name]):.0f}" if times.get(name) else "not timed"
        if name == "fp32":
            print(f"| {name} | | | | | {ms} |")
            continue
        hidden = error(out.hidden_states[args.layers], reference.hidden_states[args.layers])
        logits = error(out.logits, reference.logits)
        print(f"| {name} | {hidden[0]:.2e} | {hidden[1]:.3%} | {logits[0]:.2e} | {logits[1]:.3%} | {ms} |")
    mine, theirs = outputs["bf16_teacher (now)"], outputs["fp32 weights under autocast"]
    equal = (all(torch.equal(a, b) for a, b in zip(mine.hidden_states, theirs.hidden_states))
             and torch.equal(mine.logits, theirs.logits))
    largest = max(float((a.float() - b.float()).abs().max())
                  for a, b in zip((*mine.hidden_states, mine.logits), (*theirs.hidden_states, theirs.logits)))
    print()
    print(f"bf16_teacher against autocast, every layer and the logits: "
          f"{'bitwise equal' if equal else f'largest difference {largest:.3g}'}; "
          f"output dtypes: hidden states {mine.hidden_states[-1].dtype}, logits {mine.logits.dtype}")


def error(value: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(per-element MSE, ||value - reference|| / ||reference||), in fp32."""
    difference = value.float() - reference
    return float(difference.pow(2).mean()), float(difference.norm() / reference.norm())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU"


if __name__ == "__main__":
    main()
