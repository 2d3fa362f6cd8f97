"""Several processes under torchrun: one per GPU (gloo processes on the CPU), one model.

Without torchrun (or with one process) every function here is a no-op that returns what
a single process needs, so the rest of the code is written once. Under torchrun:

- every rank reads its slice of the same global batch (`shard`), computes its gradients
  and averages them with the others (the student through DistributedDataParallel, the
  objective's own parameters, LAD's gates, in one flat all-reduce: `average_gradients`);
- user errors are agreed: `agreed(fn)` runs fn on every rank (or on rank 0 only), and if
  any rank failed, every rank raises the same one-line error, printed by rank 0 alone
  (fine_tune.errors.run_cli stays quiet on the others);
- only rank 0 writes files and prints progress.

This module imports torch only inside functions: run_cli reads `rank()` before torch is
ever imported.
"""
import os
from contextlib import contextmanager

from fine_tune.errors import SharedError, UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    """More than one process trains or evaluates together."""
    return world_size() > 1


def process_device(device_id):
    """Under torchrun each rank's device: its own GPU cuda:LOCAL_RANK, or the CPU with
    --device_id -1. Without torchrun: None (the flag decides)."""
    import torch
    if not active():
        return None
    if device_id == -1:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SharedError("under torchrun without a CUDA GPU, pass --device_id -1 (the processes "
                        "then run on the CPU and talk through gloo)")
    here = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank() + 1))  # processes on this machine
    if here > torch.cuda.device_count():  # (every rank of the machine finds it alike)
        raise SharedError(f"torchrun started {here} processes on this machine but it has "
                          f"{torch.cuda.device_count()} GPU(s): pass --nproc_per_node "
                          f"{torch.cuda.device_count()} or fewer")
    return torch.device("cuda", local_rank())


@contextmanager
def same_on_every_rank():
    """For checks of the flags alone, before the processes talk: every rank finds the
    same error, so rank 0 alone prints it."""
    try:
        yield
    except SharedError:
        raise
    except UserError as error:
        raise SharedError(str(error)) from None


def select_device(args):
    """The device this process runs on, from --device_id. Under torchrun: the rank's own
    (see process_device); --tdevice_id and --gate_device_id may only repeat --device_id
    (the teacher and the gates run where the student does), and a --device_id other than
    -1 is said to be replaced. Checked before the process group starts."""
    from fine_tune.modeling import resolve_device
    if not active():
        return resolve_device(args.device_id)
    for flag, what in (("tdevice_id", "teacher runs"), ("gate_device_id", "gates run")):
        value = getattr(args, flag, None)
        if value is not None and value != args.device_id:
            raise SharedError(f"--{flag} {value}: under torchrun the {what} on "
                            f"each process's own device (cuda:LOCAL_RANK, or the CPU with "
                            f"--device_id -1); leave --{flag} out")
    device = process_device(args.device_id)
    if args.device_id not in (None, -1) and is_main():
        print(f"under torchrun each process uses its own GPU (cuda:LOCAL_RANK), so --device_id "
              f"{args.device_id} only says: on GPUs")
    return device


def start(device) -> None:
    """Join the process group (NCCL between GPUs, gloo between CPU processes). Called after
    the flags are checked, so a flag error never waits for the other ranks."""
    import torch
    import torch.distributed as dist
    if not active() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")


def gather_objects(value) -> list:
    """Every rank's `value`, in rank order (pickled; for small things)."""
    if not active():
        return [value]
    import torch.distributed as dist
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def agreed(fn, main_only: bool = False):
    """fn() on every rank (on rank 0 alone with main_only), then agree: a UserError on
    any rank is raised on all of them (rank 0's first, else the lowest rank's, named).
    Returns fn's result (None on ranks that did not run it)."""
    if not active():
        return fn()
    result, error = None, None
    if is_main() or not main_only:
        try:
            result = fn()
        except UserError as caught:
            error = str(caught)
    for where, message in enumerate(gather_objects(error)):
        if message is not None:
            raise SharedError(message if where == 0 else f"rank {where}: {message}")
    return result


def main_first(fn):
    """fn() on rank 0, then on the other ranks: what rank 0 writes (a token cache), they
    read."""
    result = agreed(fn, main_only=True)
    if active() and not is_main():
        return agreed(fn)
    agreed(lambda: None)  # the other ranks' turn
    return result


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def mean_over_ranks(values: dict) -> dict:
    """{name: tensor (scalar or vector)} averaged over the ranks, in one all-reduce (at log
    steps only)."""
    if not active() or not values:
        return values
    import torch
    import torch.distributed as dist
    names = list(values)  # the same order on every rank: the same code built it
    flat = torch.cat([values[name].float().reshape(-1) for name in names])
    dist.all_reduce(flat)
    flat /= world_size()
    parts = flat.split([values[name].numel() for name in names])
    return {name: part.view_as(values[name]) for name, part in zip(names, parts)}


def min_over_ranks(tensor):
    if active():
        import torch.distributed as dist
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def average_gradients(parameters) -> None:
    """Average the gradients of `parameters` over the ranks in one flat all-reduce. A
    parameter that got no gradient on a rank takes part with zeros (so a gate unused in a
    step never hangs the reduction); one that got none on any rank is left without a
    gradient, as in one process, so AdamW neither decays nor moves it. Whether each had a
    gradient travels in the same all-reduce, at the end of the vector."""
    if not active():
        return
    import torch
    import torch.distributed as dist
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    # (the usual case, every gradient here, fills on the device: no host-to-device copy,
    # which would wait for the step's kernels; a missing one is read back on the host)
    missing = any(p.grad is None for p in parameters)
    options = dict(device=grads[0].device, dtype=grads[0].dtype)
    present = (torch.tensor([float(p.grad is not None) for p in parameters], **options)
               if missing else torch.ones(len(parameters), **options))
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])
    dist.all_reduce(flat)
    anywhere = (flat[-len(parameters):] > 0).tolist() if missing else [True] * len(parameters)
    flat /= world_size()
    offset = 0
    for p, used in zip(parameters, anywhere):
        averaged = flat[offset:offset + p.numel()].view_as(p)
        if not used:
            p.grad = None
        elif p.grad is None:
            p.grad = averaged.clone()
        else:
            p.grad.copy_(averaged)
        offset += p.numel()


def broadcast_parameters(module) -> None:
    """Rank 0's values of `module`'s parameters on every rank (one flat broadcast)."""
    if not active():
        return
    import torch
    import torch.distributed as dist
    parameters = list(module.parameters())
    if not parameters:
        return
    with torch.no_grad():
        flat = torch.cat([p.reshape(-1) for p in parameters])
        dist.broadcast(flat, 0)
        torch._foreach_copy_(parameters, [part.view_as(p) for part, p in
                                          zip(flat.split([p.numel() for p in parameters]), parameters)])


def shard(rows):
    """This rank's slice of a global batch (ranks get equal slices, the first ones one
    row more when the batch does not divide)."""
    if not active():
        return rows
    return rows.tensor_split(world_size())[rank()]
