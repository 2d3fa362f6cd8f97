"""`make demo`: the seed pipeline of README.md at toy scale, on the CPU, offline.

It writes a small learnable NLI data set in GLUE's MNLI layout and a tiny BERT (random
weights, WordPiece vocabulary trained on the demo text) under demo/, then runs the same
entry-point functions as the README's commands, with small sizes and step counts:
teacher fine-tuning, evaluation of every checkpoint on dev_matched and dev_mismatched,
test-set submission files, a final table of accuracies per model, and the report of
all experiments with its plots (python -m fine_tune.report --plots).
"""
import shlex
import sys
import time
from pathlib import Path

from fine_tune.alp import distil_alp
from fine_tune.cli import (alp_parser, eval_parser, lad_no_parser, lad_parser, new_parser,
                           pkd_parser, predict_parser, probing_parser, teacher_parser)
from fine_tune.demo_data import demo_texts, write_demo_mnli, write_tiny_bert
from fine_tune.errors import run_cli
from fine_tune.evaluation import evaluate_checkpoints, write_test_predictions
from fine_tune.lad import distil_lad, distil_lad_no, distil_partial_lad
from fine_tune.pkd import distil_pkd
from fine_tune.report import build_parser as report_parser
from fine_tune.report import report
from fine_tune.settings import Settings
from fine_tune.teacher import fine_tune_teacher

TEACHER_FLAGS = """--experiment teacher_base --model bert --ptrain_ver {bert} --task mnli
    --dataset train --num_class 3 --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999
    --ckpt_step 200 --dropout 0.1 --eps 1e-8 --log_step 50 --lr 5e-4 --max_norm 1.0
    --max_seq_len 64 --device_id -1 --seed 42 --total_step 600 --warmup_step 60
    --weight_decay 0.01"""

# The seed's student flags, at toy scale: 2 of the teacher's 4 layers, 64 wide.
STUDENT_FLAGS = """--teacher_exp teacher_base --tmodel bert --tckpt 600 --model bert --task mnli
    --accum_step 1 --batch_size 32 --beta1 0.9 --beta2 0.999 --ckpt_step 200 --d_ff 128
    --d_model 64 --dropout 0.1 --eps 1e-8 --log_step 50 --lr 5e-4 --max_norm 1.0
    --num_attention_heads 2 --num_hidden_layers 2 --type_vocab_size 2 --total_step 600
    --warmup_step 60 --weight_decay 0.01 --seed 42 --device_id -1 --tdevice_id -1
    --softmax_temp 10 --soft_weight 0.5 --hard_weight 0.5"""
GATE_FLAGS = """--gate_beta1 0.9 --gate_beta2 0.999 --gate_eps 1e-8 --gate_lr 1e-4 --gate_max_norm 1.0
    --gate_total_step 600 --gate_warmup_step 60 --gate_weight_decay 0.01 --gate_device_id -1"""

# (table label, experiment, script, parser, entry function, flags)
MODELS = [
    ("teacher (4 layers)", "teacher_base", "run_fine_tune.py", teacher_parser, fine_tune_teacher,
     TEACHER_FLAGS),
    ("LAD", "LAD", "run_lad_distil.py", lad_parser, distil_lad,
     f"--experiment LAD {STUDENT_FLAGS} {GATE_FLAGS} --mu 500"),
    ("LAD-NO", "LAD_NO", "run_lad_no_distil.py", lad_no_parser, distil_lad_no,
     f"--experiment LAD_NO {STUDENT_FLAGS} {GATE_FLAGS} --mu 500"),
    ("partial LAD", "partial_LAD", "run_probing_lad.py", probing_parser, distil_partial_lad,
     f"--experiment partial_LAD --probing_exp partial_lad --gate_indices 2 --student_indices 1,2 "
     f"{STUDENT_FLAGS} {GATE_FLAGS} --mu 500"),
    ("ALP-KD (hidden-v2)", "ALP_KD", "run_alp_distil.py", alp_parser, distil_alp,
     f"--experiment ALP_KD --alp_exp alp-kd-hidden-v2 {STUDENT_FLAGS} --mu 500"),
    ("BERT-PKD", "PKD", "run_pkd_distill.py", pkd_parser, distil_pkd,
     f"--experiment PKD {STUDENT_FLAGS} --mu 500"),
]


def run(script: str, parser, function, flags: str, common: str):
    """What `python <script> <flags> <common>` does, in this process (imports only once)."""
    argv = shlex.split(flags) + shlex.split(common)
    print(f"\n$ python {script} {' '.join(argv)}", flush=True)
    saved, sys.argv = sys.argv, [script, *argv]  # config.json records this command, not demo.py
    try:
        return function(Settings(**vars(parser().parse_args(argv))))
    finally:
        sys.argv = saved


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
    paths = f"--data_dir {data_dir} --exp_dir {exp_dir}"
    amp = f"--amp {args.amp}"

    table = []
    for label, experiment, script, parser, function, flags in MODELS:
        run(script, parser, function, flags.format(bert=bert), f"{paths} {amp} --overwrite")
        row = {"model": label}
        for dataset in ("dev_matched", "dev_mismatched"):
            eval_flags = f"--experiment {experiment} --model bert --task mnli --dataset {dataset} " \
                         f"--batch_size 512 --device_id -1 {amp}"
            results = run("run_fine_tune_eval.py", eval_parser, evaluate_checkpoints,
                          eval_flags, paths)
            row[dataset] = results["accuracy"].iloc[-1]  # the last checkpoint, not a dev-picked one
        for dataset in ("test_matched", "test_mismatched"):
            run("generate_test_prediction.py", predict_parser, write_test_predictions,
                f"--experiment {experiment} --model bert --task mnli --dataset {dataset} "
                f"--batch_size 256 --ckpt {int(results['step'].iloc[-1])} --device_id -1 {amp}", paths)
        table.append(row)

    print(f"\nDemo results (accuracy of each model's last checkpoint; chance is 0.33; --amp "
          f"{args.amp}), {time.time() - started:.0f} s in all:")
    print(f"{'model':<24}{'dev_matched':>14}{'dev_mismatched':>16}")
    for row in table:
        print(f"{row['model']:<24}{row['dev_matched']:>14.4f}{row['dev_mismatched']:>16.4f}")
    run("-m fine_tune.report", report_parser, report, f"--exp_dir {exp_dir} --plots", "")
    print(f"\nExperiments, checkpoints, results and submission files are in {exp_dir}/")


def main() -> None:
    parser = new_parser(__doc__, prog="python -m fine_tune.demo")
    parser.add_argument("--demo_dir", default="demo",
                        help="folder for the demo's data, tiny BERT and experiments")
    parser.add_argument("--amp", choices=("fp32", "bf16"), default="fp32",
                        help="precision of every training, evaluation and prediction step "
                             "(bf16: autocast, as the scripts' --amp bf16)")
    run_cli(demo, parser.parse_args())


if __name__ == "__main__":
    main()
