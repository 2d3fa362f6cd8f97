"""Write the GLUE submission file (MNLI-m.tsv / MNLI-mm.tsv) of one checkpoint."""
from fine_tune.cli import predict_parser
from fine_tune.errors import run_cli
from fine_tune.evaluation import write_test_predictions

if __name__ == "__main__":
    run_cli(write_test_predictions, predict_parser().parse_args())
