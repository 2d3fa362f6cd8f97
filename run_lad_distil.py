"""LAD: distil a fine-tuned BERT teacher into a smaller student through chained gates."""
from fine_tune.cli import main, lad_parser

if __name__ == "__main__":
    main(lad_parser(), "fine_tune.lad:distil_lad")
