"""LAD-NO: LAD without the chain of gates (Section 5.4 of the paper)."""
from fine_tune.cli import main, lad_no_parser

if __name__ == "__main__":
    main(lad_no_parser(), "fine_tune.lad:distil_lad_no")
