"""NT-Xent against an independent transcription of the official TF formulation, and across two real processes."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from stages import nt_xent

LARGE_NUM = 1e9


def official_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The four-block form of google-research/simclr `add_contrastive_loss`, single device, float64."""
    h1, h2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    n = h1.shape[0]
    labels = torch.arange(n)
    masks = torch.eye(n, dtype=torch.float64)
    logits_aa = h1 @ h1.T / temperature - masks * LARGE_NUM
    logits_bb = h2 @ h2.T / temperature - masks * LARGE_NUM
    logits_ab = h1 @ h2.T / temperature
    logits_ba = h2 @ h1.T / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return loss_a + loss_b


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_official_formulation(temperature):
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    expected = official_nt_xent(z1, z2, temperature)
    assert torch.allclose(nt_xent(z1, z2, temperature).double(), expected, atol=1e-5)


def test_gradients_match_official_formulation():
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    nt_xent(z1, z2, 0.5).backward()
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    official_nt_xent(r1, r2, 0.5).backward()
    assert torch.allclose(z1.grad.double(), r1.grad, atol=1e-6)
    assert torch.allclose(z2.grad.double(), r2.grad, atol=1e-6)


def test_closed_form_for_orthogonal_embeddings():
    # Each positive matches exactly (logit 1/T) and the 2N - 2 = 14 negatives are orthogonal (logit 0):
    # loss per anchor = log(1 + 14 exp(-1/T)), and the official value is twice the mean over anchors.
    z = torch.eye(8)
    expected = 2 * torch.log1p(14 * torch.exp(torch.tensor(-10.0)))
    assert torch.allclose(nt_xent(z, z.clone(), 0.1), expected, rtol=1e-4)
    assert nt_xent(z, torch.roll(z, 1, dims=0), 0.1) > 10  # positives orthogonal, one negative exact: a high loss


def test_scale_invariant_and_fp32_under_half_inputs():
    torch.manual_seed(2)
    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    loss = nt_xent(z1, z2, 0.1)
    assert torch.allclose(nt_xent(10 * z1, 3 * z2, 0.1), loss, atol=1e-5)
    half = nt_xent(z1.half(), z2.half(), 0.1)  # the mask must not overflow in half precision
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert torch.allclose(half, loss, atol=1e-2)


@pytest.mark.parametrize(
    ("z1", "z2", "temperature", "culprit"),
    [
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, "temperature"),
        (torch.randn(4, 8), torch.randn(4, 8), -0.5, "temperature"),
        (torch.randn(4, 8), torch.randn(5, 8), 0.1, "z1 and z2"),
        (torch.randn(4, 8), torch.randn(4, 7), 0.1, "z1 and z2"),
        (torch.randn(4, 8, 2), torch.randn(4, 8, 2), 0.1, "z1 and z2"),
    ],
)
def test_bad_input_names_the_argument(z1, z2, temperature, culprit):
    with pytest.raises(ValueError, match=culprit):
        nt_xent(z1, z2, temperature)


# --- two real processes (gloo) ----------------------------------------------------------------------------------------

GLOBAL_BATCH, DIM_IN, DIM_OUT, TEMPERATURE = 8, 12, 6, 0.5


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(DIM_IN, 10), torch.nn.Tanh(), torch.nn.Linear(10, DIM_OUT))
    return model, torch.randn(GLOBAL_BATCH, DIM_IN), torch.randn(GLOBAL_BATCH, DIM_IN)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, x1, x2 = _problem()
        ddp = DistributedDataParallel(model)  # averages gradients across processes, as Accelerate does
        local = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        both = ddp(torch.cat([x1[local], x2[local]]))  # both views in one forward
        z1, z2 = both.chunk(2)
        loss = nt_xent(z1, z2, TEMPERATURE)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        mean_loss /= world
        grads = {name: p.grad for name, p in model.named_parameters()}
        torch.save(
            {"loss": mean_loss, "local_loss": loss.detach(), "grads": grads}, os.path.join(out_dir, f"{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_batch_4_equal_one_process_batch_8(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, start_method="spawn")

    model, x1, x2 = _problem()
    z1, z2 = model(torch.cat([x1, x2])).chunk(2)
    loss = nt_xent(z1, z2, TEMPERATURE)
    loss.backward()

    for rank in range(world):
        result = torch.load(tmp_path / f"{rank}.pt")
        assert (result["loss"] - loss).abs().item() < 1e-5
        for name, param in model.named_parameters():
            assert (result["grads"][name] - param.grad).abs().max().item() < 1e-5, name
    # Each process scores its own anchors against all 2N keys: without cross-process negatives it would not match.
    local_only = nt_xent(*model(torch.cat([x1[:4], x2[:4]])).chunk(2), TEMPERATURE)
    assert (torch.load(tmp_path / "0.pt")["local_loss"] - local_only).abs().item() > 1e-3
