"""`make demo`: the seed pipeline of README.md at toy scale, on the CPU, offline, as a sweep.

It writes a small learnable NLI data set in GLUE's MNLI layout and a tiny BERT (random
weights, WordPiece vocabulary trained on the demo text) under demo/, then runs the plan
plans/demo.toml with python -m fine_tune.sweep: teacher fine-tuning, the five
distillation methods, every checkpoint scored on dev_matched and dev_mismatched as it is
saved, test-set submission files of each model's best checkpoint, and the sweep's report
with its plots. Running it again does only what is left (make clean-demo starts over).
"""
import time
from pathlib import Path

from fine_tune.cli import new_parser
from fine_tune.demo_data import demo_texts, write_demo_mnli, write_tiny_bert
from fine_tune.errors import run_cli
from fine_tune.sweep import ROOT, build_parser as sweep_parser, sweep

PLAN = ROOT / "plans" / "demo.toml"


def demo(args) -> None:
    started = time.time()
    root = Path(args.demo_dir)
    data_dir, bert, exp_dir = root / "data", root / "bert-tiny", root / "exp"
    if not (data_dir / "MNLI" / "train.tsv").is_file():
        counts = write_demo_mnli(data_dir)
        print(f"wrote demo MNLI to {data_dir}/MNLI: {counts}")
    if not (bert / "config.json").is_file():
        write_tiny_bert(bert, demo_texts(data_dir))
        print(f"wrote a tiny BERT (random weights, demo vocabulary) to {bert}")
    argv = [str(PLAN.relative_to(Path.cwd().resolve()) if PLAN.is_relative_to(Path.cwd().resolve())
                else PLAN), "--cpus", str(args.cpus),
            "--set", f"data_dir={data_dir}", "--set", f"exp_dir={exp_dir}",
            "--set", f"ptrain_ver={bert}", "--set", f"amp={args.amp}"]
    print(f"\n$ python -m fine_tune.sweep {' '.join(argv)}", flush=True)
    sweep(sweep_parser().parse_args(argv))
    print(f"\nThe demo took {time.time() - started:.0f} s. Experiments, checkpoints, results and "
          f"submission files are in {exp_dir}/; the sweep's logs, report and plots in "
          f"{exp_dir}/demo/")


def main() -> None:
    parser = new_parser(__doc__, prog="python -m fine_tune.demo")
    parser.add_argument("--demo_dir", default="demo",
                        help="folder for the demo's data, tiny BERT and experiments")
    parser.add_argument("--amp", choices=("fp32", "bf16"), default="fp32",
                        help="precision of every training, evaluation and prediction step "
                             "(bf16: autocast, as the scripts' --amp bf16)")
    parser.add_argument("--cpus", type=int, default=2,
                        help="runs side by side (the sweep's --cpus)")
    run_cli(demo, parser.parse_args())


if __name__ == "__main__":
    main()
