"""MiniLM-style distillation of self-attention relations (query-query, key-key, value-value)."""
from fine_tune.cli import main, minilm_parser

if __name__ == "__main__":
    main(minilm_parser(), "fine_tune.minilm:distil_minilm")
