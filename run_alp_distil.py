"""ALP-KD baseline (Section 5.3 of the paper): attention-based layer projection."""
from fine_tune.cli import main, alp_parser

if __name__ == "__main__":
    main(alp_parser(), "fine_tune.alp:distil_alp")
