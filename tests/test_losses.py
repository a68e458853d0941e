"""The modular objectives against values computed by hand on tiny inputs."""
import math

import pytest
import torch

from moda_core.losses import modular_losses

R2 = 1 / math.sqrt(2)


def test_fc_values_by_hand():
    # rows (1,0), (1,1), (0,2): unit vectors (1,0), (r,r), (0,1) with r = 1/sqrt(2)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    aff, dis, com = modular_losses([a], torch.tensor([0, 0, 1]))
    assert aff.item() == pytest.approx(1 - R2)  # the one same pair (0,1) has cosine r
    assert dis.item() == pytest.approx((0 + R2) / 2)  # pairs (0,2): 0 and (1,2): r
    assert com.item() == pytest.approx(5 / 6)  # sum |a| / (B*N)


def test_conv_maps_reduce_by_mean_abs_over_space():
    # sample 0: channel means |.| = (1, 0); sample 1: (1, 1); same label
    a = torch.zeros(2, 2, 2, 2)
    a[0, 0] = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    a[1, 0] = 1.0
    a[1, 1] = torch.tensor([[-4.0, 0.0], [0.0, 0.0]])
    aff, dis, com = modular_losses([a], torch.tensor([3, 3]))
    assert aff.item() == pytest.approx(1 - R2)
    assert dis.item() == 0.0  # no different-label pair
    assert com.item() == pytest.approx((1 + 0 + 1 + 1) / 4)


def test_points_are_averaged():
    a1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosine 0
    a2 = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # cosine 1
    aff, dis, com = modular_losses([a1, a2], torch.tensor([1, 1]))
    assert aff.item() == pytest.approx(1 - (0 + 1) / 2)
    assert com.item() == pytest.approx((0.5 + 4 / 6) / 2)


def test_no_same_label_pair_gives_zero_affinity_not_nan():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], requires_grad=True)
    aff, dis, com = modular_losses([a], torch.tensor([0, 1, 2]))
    assert aff.item() == 0.0
    assert dis.item() == pytest.approx((R2 + 0 + R2) / 3)
    (aff + dis + com).backward()
    assert torch.isfinite(a.grad).all()


def test_no_different_label_pair_gives_zero_dispersion():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    aff, dis, _ = modular_losses([a], torch.tensor([4, 4, 4]))
    assert dis.item() == 0.0
    assert aff.item() == pytest.approx(1 - (R2 + 0 + R2) / 3)


def test_single_sample_and_zero_activations_are_finite():
    aff, dis, com = modular_losses([torch.zeros(1, 3)], torch.tensor([0]))
    assert (aff.item(), dis.item(), com.item()) == (0.0, 0.0, 0.0)
    zeros = torch.zeros(4, 5, requires_grad=True)
    out = modular_losses([zeros], torch.tensor([0, 0, 1, 1]))
    sum(out).backward()
    assert all(torch.isfinite(t) for t in out) and torch.isfinite(zeros.grad).all()


def test_matches_explicit_pair_loop_on_random_batch():
    torch.manual_seed(0)
    acts = [torch.randn(9, 4, 3, 3).relu(), torch.randn(9, 7).relu()]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    aff, dis, com = modular_losses(acts, labels)
    same_means, diff_means = [], []
    for a in acts:
        v = a.abs().mean(dim=(2, 3)) if a.dim() == 4 else a
        v = v / v.norm(dim=1, keepdim=True)
        same = [float(v[i] @ v[j]) for i in range(9) for j in range(i + 1, 9) if labels[i] == labels[j]]
        diff = [float(v[i] @ v[j]) for i in range(9) for j in range(i + 1, 9) if labels[i] != labels[j]]
        same_means.append(sum(same) / len(same))
        diff_means.append(sum(diff) / len(diff))
    assert aff.item() == pytest.approx(1 - sum(same_means) / 2, abs=1e-6)
    assert dis.item() == pytest.approx(sum(diff_means) / 2, abs=1e-6)
    expected_com = (acts[0].abs().mean().item() + acts[1].abs().mean().item()) / 2
    assert com.item() == pytest.approx(expected_com, abs=1e-6)


def test_nonnegative_shortcut_is_exact_on_relu_outputs():
    torch.manual_seed(1)
    raw = [torch.randn(8, 5, 4, 4), torch.randn(8, 6)]
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1])
    results, grads = [], []
    for nonnegative in (False, True):
        leaves = [r.clone().requires_grad_() for r in raw]
        out = modular_losses([leaf.relu() for leaf in leaves], labels, nonnegative=nonnegative)
        sum(out).backward()
        results.append(torch.stack(out))
        grads.append([leaf.grad for leaf in leaves])
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-7)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
