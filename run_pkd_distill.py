"""BERT-PKD baseline (Section 7.1 of the paper's appendix); teacher and student may sit on two devices."""
from fine_tune.cli import pkd_parser
from fine_tune.errors import run_cli
from fine_tune.pkd import distil_pkd

if __name__ == "__main__":
    run_cli(distil_pkd, pkd_parser().parse_args())
