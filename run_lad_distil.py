"""LAD: distil a fine-tuned BERT teacher into a smaller student through chained gates."""
from fine_tune.cli import student_parser
from fine_tune.errors import run_cli
from fine_tune.lad import distil_lad

if __name__ == "__main__":
    run_cli(distil_lad, student_parser(
        "LAD: distil a fine-tuned teacher into a smaller BERT. Chained highway gates aggregate "
        "teacher layers (A_1 = H_1, A_i = Gate_i(A_(i-1), H_i)); student layer j learns A_(j*k).",
        gates=True).parse_args())
