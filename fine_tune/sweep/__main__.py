"""`python -m fine_tune.sweep PLAN.toml` (the command is cli.py's `main`)."""
from fine_tune.sweep.cli import main

if __name__ == "__main__":
    main()
