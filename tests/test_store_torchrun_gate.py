"""Under torchrun a gate that no rank used keeps no gradient, as in one
process (AdamW then neither decays nor moves it); one used on some ranks only is averaged
with zeros from the others."""
import textwrap

import pytest

from conftest import ROOT
from forked import torchrun_forked

SCRIPT = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, {root!r})
    from fine_tune import distributed
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    used = torch.nn.Parameter(torch.ones(3))       # every rank
    partly = torch.nn.Parameter(torch.ones(2))     # rank 0 only
    unused = torch.nn.Parameter(torch.ones(4))     # no rank
    loss = used.sum() * (rank + 1) + (partly.sum() * 4 if rank == 0 else 0)
    loss.backward()
    distributed.average_gradients([used, partly, unused])
    if rank == 0:
        print("used", used.grad.tolist())
        print("partly", partly.grad.tolist())
        print("unused", unused.grad)
        before = unused.detach().clone()
        torch.optim.AdamW([used, partly, unused], lr=0.1, weight_decay=0.5).step()
        print("moved", not torch.equal(before, unused.detach()))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_a_gate_no_rank_used_keeps_no_gradient(tmp_path):
    script = tmp_path / "gates.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    # the two ranks as torchrun starts them, forked from this process (tests/forked.py)
    result = torchrun_forked(script, cwd=tmp_path, timeout=300)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["used"] == "[1.5, 1.5, 1.5]"      # (1 + 2) / 2
    assert lines["partly"] == "[2.0, 2.0]"         # (4 + 0) / 2
    assert lines["unused"] == "None"               # as one process: no gradient at all
    assert lines["moved"] == "False"               # so AdamW's decay does not move it
