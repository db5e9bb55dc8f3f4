"""Losses: InfoNCE against a float64 hand computation, the logit-scale cap, and the cross-process gather."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modeling_evalign.losses import ClipLoss, cosine_loss, gather_with_grad, mse_loss, symmetric_info_nce


def _info_nce_reference(ev: np.ndarray, tg: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE with explicit per-row log-softmax loops in float64."""
    ev = ev / np.linalg.norm(ev, axis=1, keepdims=True)
    tg = tg / np.linalg.norm(tg, axis=1, keepdims=True)
    n = ev.shape[0]
    total = 0.0
    for a, b in ((ev, tg), (tg, ev)):
        for i in range(n):
            logits = [scale * float(np.dot(a[i], b[j])) for j in range(n)]
            m = max(logits)
            log_z = m + math.log(sum(math.exp(v - m) for v in logits))
            total += -(logits[i] - log_z)
    return total / (2 * n)


@pytest.mark.parametrize("scale", [1.0, 14.285714, 100.0])
def test_info_nce_matches_float64_loop(scale):
    ev, tg = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    got = symmetric_info_nce(ev, tg, scale)
    assert got.dim() == 0
    assert got.item() == pytest.approx(_info_nce_reference(ev.numpy(), tg.numpy(), scale), rel=1e-12)


def test_info_nce_is_small_for_matching_pairs_and_rejects_bad_shapes():
    x = torch.randn(16, 8, dtype=torch.float64)
    assert symmetric_info_nce(x, x, 100.0).item() < 1e-3  # positives dominate at the maximal scale
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        symmetric_info_nce(torch.randn(4, 8), torch.randn(5, 8), 1.0)
    with pytest.raises(ValueError, match=r"\(4, 2, 8\)"):
        symmetric_info_nce(torch.randn(4, 2, 8), torch.randn(4, 2, 8), 1.0)


def test_clip_loss_clamps_logit_scale_at_ln_100():
    loss = ClipLoss(max_logit_scale=100.0)
    high = torch.tensor(math.log(1000.0), requires_grad=True)
    assert loss.scale(high).item() == pytest.approx(100.0, rel=1e-6)
    low = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    assert loss.scale(low).item() == pytest.approx(1 / 0.07, rel=1e-12)
    ev, tg = torch.randn(6, 4), torch.randn(6, 4)
    value = loss(ev, tg, high)
    assert value.item() == pytest.approx(symmetric_info_nce(ev, tg, 100.0).item(), rel=1e-6)
    value.backward()
    assert high.grad.item() == 0.0  # clamped: no gradient pushes the scale further up
    below = torch.tensor(1.0, requires_grad=True)
    loss(ev, tg, below).backward()
    assert below.grad.item() != 0.0
    with pytest.raises(ValueError, match="max_logit_scale"):
        ClipLoss(max_logit_scale=0.0)


def test_regression_losses_match_float64_reference():
    p, t = torch.randn(5, 3, 4, dtype=torch.float64), torch.randn(5, 3, 4, dtype=torch.float64)
    pn, tn = p.numpy(), t.numpy()
    assert mse_loss(p, t).item() == pytest.approx(((pn - tn) ** 2).mean(), rel=1e-12)
    cos = (pn * tn).sum(-1) / (np.linalg.norm(pn, axis=-1) * np.linalg.norm(tn, axis=-1))
    assert cosine_loss(p, t).item() == pytest.approx((1 - cos).mean(), rel=1e-12)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    gathered, offset = gather_with_grad(x)
    assert gathered is x and offset == 0


# -- two CPU processes (gloo) against one process on the concatenated batch --------------------------
# The workers load losses.py by path (torch only), so they start fast without importing transformers.
WORKER = r"""
import importlib.util, os, sys
import torch
import torch.distributed as dist

spec = importlib.util.spec_from_file_location("evalign_losses", sys.argv[1])
losses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(losses)
rank, world, per_rank, store, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
batch = torch.load(sys.argv[7])
rows = slice(rank * per_rank, (rank + 1) * per_rank)
enc = torch.nn.Linear(6, 5).double()
with torch.no_grad():
    enc.weight.copy_(batch["weight"])
    enc.bias.copy_(batch["bias"])
log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
loss = losses.ClipLoss()(enc(batch["x"][rows]), batch["y"][rows], log_scale)
loss.backward()
grads = [enc.weight.grad, enc.bias.grad, log_scale.grad]
loss = loss.detach()
# what DDP does with a per-rank loss: average the loss (for logging) and the parameter gradients
dist.all_reduce(loss)
for g in grads:
    dist.all_reduce(g)
result = {"loss": loss / world, "grads": [g / world for g in grads]}
try:  # different batch sizes per rank are refused with a clear error
    losses.gather_with_grad(torch.zeros(per_rank + rank, 3))
except ValueError as err:
    result["uneven_error"] = str(err)
if rank == 0:
    torch.save(result, out)
dist.barrier()  # neither rank tears the group down while the other still talks to it
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # skip interpreter teardown: gloo's C++ destructors can race the peer's exit
"""
WORLD = 2
PER_RANK = 4


def _loss_and_grads(batch, rows):
    enc = torch.nn.Linear(6, 5).double()
    with torch.no_grad():
        enc.weight.copy_(batch["weight"])
        enc.bias.copy_(batch["bias"])
    log_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    loss = ClipLoss()(enc(batch["x"][rows]), batch["y"][rows], log_scale)
    loss.backward()
    return loss.detach(), [enc.weight.grad, enc.bias.grad, log_scale.grad]


@pytest.mark.multiprocess
def test_two_process_gather_matches_single_process(tmp_path):
    import subprocess
    import sys

    import modeling_evalign.losses as losses_module

    n = WORLD * PER_RANK
    batch = {
        "x": torch.randn(n, 6, dtype=torch.float64), "y": torch.randn(n, 5, dtype=torch.float64),
        "weight": torch.randn(5, 6, dtype=torch.float64), "bias": torch.randn(5, dtype=torch.float64),
    }
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "rank0.pt"
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), losses_module.__file__, str(rank), str(WORLD),
             str(PER_RANK), str(tmp_path / "store"), str(out), str(tmp_path / "batch.pt")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(WORLD)
    ]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    result = torch.load(out)
    loss, grads = _loss_and_grads(batch, slice(None))
    assert result["loss"].item() == pytest.approx(loss.item(), rel=1e-12)
    for got, want in zip(result["grads"], grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the gather really mattered: a purely local loss on half the batch differs
    half_loss, half_grads = _loss_and_grads(batch, slice(0, PER_RANK))
    assert abs(half_loss.item() - loss.item()) > 1e-3
    assert not torch.allclose(half_grads[0], grads[0])
    assert "same batch size" in result["uneven_error"] and "[4, 5]" in result["uneven_error"]
