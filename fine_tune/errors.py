"""User-facing errors: one clear line on stderr, non-zero exit, no traceback."""
import os
import sys
import time


class UserError(Exception):
    """A mistake in the user's input or environment; the message names the fix."""


class SharedError(UserError):
    """Raised alike on every torchrun process (an error they agreed on): printed once, by
    rank 0."""


class Interrupted(SharedError):
    """Ctrl-C: the message says where the run stopped and how to continue it (every
    process gets the signal; rank 0 says it)."""


def quiet_process() -> bool:
    """A torchrun process other than rank 0: it prints no output and no shared errors."""
    return os.environ.get("RANK", "0") != "0"


def wait_for_rank_0(limit_s: float = 30) -> None:
    """A quiet process that found a flag error, which rank 0 finds too: give rank 0 the
    time to say it. Exiting at once would race it: torchrun stops every other process as
    soon as one fails, and rank 0 (slower to import, say) would be stopped before it
    printed anything. torchrun ends this wait by stopping this process once rank 0 has
    exited. (Only under torchrun's launcher, which sets TORCHELASTIC_RUN_ID, and only for
    flag errors, found before the processes join: errors found after it are agreed on
    through the process group, where a rank that sleeps would hold the others up.)"""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        time.sleep(limit_s)


def run_cli(main, args) -> None:
    """Run an entry point; report a UserError as a single line and exit with status 2
    (130 for Ctrl-C, as a shell does)."""
    if quiet_process():  # rank 0 speaks for all; stderr stays open for the others' own errors
        sys.stdout = open(os.devnull, "w")
    try:
        main(args)
    except UserError as error:
        if not (isinstance(error, SharedError) and quiet_process()):
            print(f"error: {error}", file=sys.stderr)
        sys.exit(130 if isinstance(error, Interrupted) else 2)
    except KeyboardInterrupt:
        if not quiet_process():
            print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Under torchrun: leave the process group cleanly (torch is imported by then)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
