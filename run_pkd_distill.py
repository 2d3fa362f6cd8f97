"""BERT-PKD baseline (Section 7.1 of the paper's appendix); teacher and student may sit on two devices."""
from fine_tune.cli import main, pkd_parser

if __name__ == "__main__":
    main(pkd_parser(), "fine_tune.pkd:distil_pkd")
