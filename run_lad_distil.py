"""LAD: distil a fine-tuned BERT teacher into a smaller student through chained gates."""
from fine_tune.cli import lad_parser
from fine_tune.errors import run_cli
from fine_tune.lad import distil_lad

if __name__ == "__main__":
    run_cli(distil_lad, lad_parser().parse_args())
