"""LAD-NO: LAD without the chain of gates (Section 5.4 of the paper)."""
from fine_tune.cli import lad_no_parser
from fine_tune.errors import run_cli
from fine_tune.lad import distil_lad_no

if __name__ == "__main__":
    run_cli(distil_lad_no, lad_no_parser().parse_args())
