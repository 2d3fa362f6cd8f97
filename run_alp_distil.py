"""ALP-KD baseline (Section 5.3 of the paper): attention-based layer projection."""
from fine_tune.alp import distil_alp
from fine_tune.cli import alp_parser
from fine_tune.errors import run_cli

if __name__ == "__main__":
    run_cli(distil_alp, alp_parser().parse_args())
