"""User-facing errors: one clear line on stderr, non-zero exit, no traceback."""
import sys


class UserError(Exception):
    """A mistake in the user's input or environment; the message names the fix."""


class Interrupted(UserError):
    """Ctrl-C: the message says where the run stopped and how to continue it."""


def run_cli(main, args) -> None:
    """Run an entry point; report a UserError as a single line and exit with status 2
    (130 for Ctrl-C, as a shell does)."""
    try:
        main(args)
    except Interrupted as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
