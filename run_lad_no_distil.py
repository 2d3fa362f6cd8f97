"""LAD-NO: LAD without the chain of gates (Section 5.4 of the paper)."""
from fine_tune.cli import student_parser
from fine_tune.errors import run_cli
from fine_tune.lad import distil_lad_no

if __name__ == "__main__":
    run_cli(distil_lad_no, student_parser(
        "LAD-NO: like LAD, but each student layer j learns one unchained gate over teacher "
        "layers j*k-1 and j*k.", gates=True, lr=5e-5).parse_args())
