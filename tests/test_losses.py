"""vpr.losses against the formulas written out with plain loops, hand-worked cases and torch references."""

import math

import pytest
import torch
import torch.nn.functional as F

from vpr.losses import (
    LOSSES,
    TUPLE_LOSSES,
    bind_tuple_loss,
    get_loss,
    sare_ind,
    sare_joint,
    sfrs_soft,
    triplet,
)


def unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def tuples(b=3, n=4, d=5, seed=0, dtype=torch.float64):
    return unit(b, d, seed=seed, dtype=dtype), unit(b, d, seed=seed + 1, dtype=dtype), \
        unit(b, n, d, seed=seed + 2, dtype=dtype)


def dist(a, b, eps=0.0):
    return math.sqrt(sum((x - y + eps) ** 2 for x, y in zip(a, b, strict=True)))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def logit(qv, xv, form, tau):
    return dot(qv, xv) / tau if form == "dot" else -dist(qv, xv) ** 2


# ---- loop statements of the formulas -------------------------------------------------------------------

def loop_triplet(q, p, n, margin, squared):
    q, p, n = q.tolist(), p.tolist(), n.tolist()
    total, count = 0.0, 0
    for b in range(len(q)):
        per_tuple = 0.0
        for j in range(len(n[b])):
            if squared:
                per_tuple += max(0.0, dist(q[b], p[b]) ** 2 - dist(q[b], n[b][j]) ** 2 + margin)
            else:
                total += max(0.0, dist(q[b], p[b], 1e-6) - dist(q[b], n[b][j], 1e-6) + math.sqrt(margin))
                count += 1
        if squared:
            total += per_tuple
            count += 1
    return total / count


def loop_sare_ind(q, p, n, form, tau):
    q, p, n = q.tolist(), p.tolist(), n.tolist()
    total, count = 0.0, 0
    for b in range(len(q)):
        sp = logit(q[b], p[b], form, tau)
        for j in range(len(n[b])):
            sn = logit(q[b], n[b][j], form, tau)
            total += -math.log(math.exp(sp) / (math.exp(sp) + math.exp(sn)))
            count += 1
    return total / count


def loop_sare_joint(q, p, n, form, tau):
    q, p, n = q.tolist(), p.tolist(), n.tolist()
    total = 0.0
    for b in range(len(q)):
        sp = logit(q[b], p[b], form, tau)
        denom = math.exp(sp) + sum(math.exp(logit(q[b], x, form, tau)) for x in n[b])
        total += -math.log(math.exp(sp) / denom)
    return total / len(q)


def loop_sfrs_soft(student, teacher, tau_s, tau_t):
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zt = sum(math.exp(t / tau_t) for t in t_row)
        zs = sum(math.exp(s / tau_s) for s in s_row)
        for s, t in zip(s_row, t_row, strict=True):
            total += -(math.exp(t / tau_t) / zt) * math.log(math.exp(s / tau_s) / zs)
    return total / len(student)


# ---- against the loops --------------------------------------------------------------------------------

@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_triplet_matches_loops(squared, margin):
    q, p, n = tuples(seed=3)
    assert triplet(q, p, n, margin=margin, squared=squared).item() == pytest.approx(
        loop_triplet(q, p, n, margin, squared), abs=1e-12)


@pytest.mark.parametrize("form,tau", [("dot", 0.07), ("dot", 0.5), ("euclidean", 0.07)])
def test_sare_matches_loops(form, tau):
    q, p, n = tuples(b=4, n=3, d=6, seed=7)
    assert sare_ind(q, p, n, form=form, tau=tau).item() == pytest.approx(loop_sare_ind(q, p, n, form, tau),
                                                                        rel=1e-12)
    assert sare_joint(q, p, n, form=form, tau=tau).item() == pytest.approx(
        loop_sare_joint(q, p, n, form, tau), rel=1e-12)


@pytest.mark.parametrize("tau_s,tau_t", [(0.07, 0.07), (0.07, 0.05), (0.5, 1.0)])
def test_sfrs_soft_matches_loops(tau_s, tau_t):
    g = torch.Generator().manual_seed(1)
    student = torch.rand(3, 18, generator=g, dtype=torch.float64) * 2 - 1
    teacher = torch.rand(3, 18, generator=g, dtype=torch.float64) * 2 - 1
    assert sfrs_soft(student, teacher, tau_s, tau_t).item() == pytest.approx(
        loop_sfrs_soft(student, teacher, tau_s, tau_t), rel=1e-12)


# ---- hand-worked cases --------------------------------------------------------------------------------

def at(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def hand_tuple():
    # q at 0°, p at 60°, negatives at 90° and 180°: ‖q−p‖ = 1 (chord of 60°), ‖q−n1‖ = √2, ‖q−n2‖ = 2,
    # ⟨q,p⟩ = 0.5, ⟨q,n1⟩ = 0, ⟨q,n2⟩ = −1.
    t = torch.tensor
    return t([at(0)], dtype=torch.float64), t([at(60)], dtype=torch.float64), \
        t([[at(90), at(180)]], dtype=torch.float64)


def test_hand_worked_triplet():
    q, p, n = hand_tuple()
    # Paper form, margin 0.1: max(0, 1 − 2 + 0.1) + max(0, 1 − 4 + 0.1) = 0.
    assert triplet(q, p, n, margin=0.1, squared=True).item() == pytest.approx(0.0, abs=1e-12)
    # Paper form, margin 1.5: max(0, 1 − 2 + 1.5) + max(0, 1 − 4 + 1.5) = 0.5.
    assert triplet(q, p, n, margin=1.5, squared=True).item() == pytest.approx(0.5, abs=1e-12)
    # Reference form, margin 0.25 (√ = 0.5): mean(max(0, 1 − √2 + 0.5), max(0, 1 − 2 + 0.5))
    #   = (1.5 − 1.41421356) / 2 = 0.04289322; ε = 1e-6 moves it by ~1e-6.
    assert triplet(q, p, n, margin=0.25).item() == pytest.approx(0.0428932188, abs=5e-6)


def test_hand_worked_sare():
    q, p, n = hand_tuple()
    # Euclidean logits −d²: s(p) = −1, s(n1) = −2, s(n2) = −4.
    # ind: mean(log(1 + e^{−1}), log(1 + e^{−3})) = (0.31326169 + 0.04858735) / 2 = 0.18092452
    assert sare_ind(q, p, n, form="euclidean").item() == pytest.approx(0.18092452, abs=1e-8)
    # joint: log(1 + e^{−1} + e^{−3}) = log(1.41766651) = 0.34901222
    assert sare_joint(q, p, n, form="euclidean").item() == pytest.approx(0.34901222, abs=1e-8)
    # Dot logits with τ = 0.5: s(p) = 1, s(n1) = 0, s(n2) = −2.
    # ind: mean(log(1 + e^{−1}), log(1 + e^{−3})) — the same gaps, so the same 0.18092452;
    # joint: log(1 + e^{−1} + e^{−3}) = 0.34901222.
    assert sare_ind(q, p, n, form="dot", tau=0.5).item() == pytest.approx(0.18092452, abs=1e-8)
    assert sare_joint(q, p, n, form="dot", tau=0.5).item() == pytest.approx(0.34901222, abs=1e-8)


def test_hand_worked_sfrs_soft():
    # Teacher uniform over 2 entries -> targets (½, ½); student logits (0, ln 3) at τ=1 -> probs (¼, ¾).
    # L = −½ log ¼ − ½ log ¾ = ½ (1.38629436 + 0.28768207) = 0.83698822
    student = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    teacher = torch.tensor([[2.0, 2.0]], dtype=torch.float64)
    assert sfrs_soft(student, teacher, 1.0, 1.0).item() == pytest.approx(0.83698822, abs=1e-8)


# ---- against torch's own triplet loss, stability ----------------------------------------------------

def test_triplet_equals_torch_triplet_margin_loss():
    q, p, n = tuples(b=4, n=10, d=32, seed=11, dtype=torch.float32)
    b, k, d = n.shape
    expected = F.triplet_margin_loss(q.unsqueeze(1).expand(b, k, d).reshape(-1, d),
                                     p.unsqueeze(1).expand(b, k, d).reshape(-1, d),
                                     n.reshape(-1, d), margin=math.sqrt(0.1), p=2, eps=1e-6)
    assert triplet(q, p, n).item() == pytest.approx(expected.item(), abs=1e-7)


def test_sare_is_stable_for_large_logits():
    q, p, n = tuples(b=2, n=5, d=8, seed=5)
    for fn in (sare_ind, sare_joint):
        value = fn(q, p, n, form="dot", tau=1e-4)  # logits up to ±1e4: naive exp would overflow
        assert torch.isfinite(value)
    student = torch.tensor([[1e4, -1e4, 0.0]], dtype=torch.float64)
    assert torch.isfinite(sfrs_soft(student, student.flip(1), 1e-3, 1e-3))


# ---- gradients ---------------------------------------------------------------------------------------

def test_gradcheck_every_loss():
    q, p, n = tuples(b=2, n=3, d=4, seed=2)
    q, p, n = (t.clone().requires_grad_() for t in (q, p, n))
    for kwargs in ({}, {"squared": True}, {"margin": 4.0}, {"margin": 4.0, "squared": True}):
        # Stay away from the hinge kink: every term must be strictly active or strictly inactive.
        with torch.no_grad():
            d_ap = (q - p).norm(dim=-1, keepdim=True)
            d_an = (q.unsqueeze(1) - n).norm(dim=-1)
            if kwargs.get("squared"):
                gap = d_ap**2 - d_an**2 + kwargs.get("margin", 0.1)
            else:
                gap = d_ap - d_an + math.sqrt(kwargs.get("margin", 0.1))
            assert gap.abs().min() > 1e-3
        assert torch.autograd.gradcheck(lambda a, b, c, kw=kwargs: triplet(a, b, c, **kw), (q, p, n))
    for fn in (sare_ind, sare_joint):
        for form in ("dot", "euclidean"):
            assert torch.autograd.gradcheck(lambda a, b, c, f=fn, m=form: f(a, b, c, form=m), (q, p, n))
    student = unit(2, 6, seed=9).requires_grad_()
    teacher = unit(2, 6, seed=10)
    assert torch.autograd.gradcheck(lambda s: sfrs_soft(s, teacher, 0.07, 0.05), (student,))


def test_sfrs_soft_gives_no_gradient_to_the_teacher():
    student = unit(2, 9, seed=1).requires_grad_()
    teacher = unit(2, 9, seed=2).requires_grad_()
    sfrs_soft(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_batch_loss_is_the_mean_of_per_tuple_losses():
    # Both reference losses average over tuples: a batch equals the mean of its one-tuple losses.
    q, p, n = tuples(b=6, n=4, d=8, seed=4)
    for name in ("triplet", "sare_ind", "sare_joint"):
        fn = LOSSES[name]
        per_tuple = torch.stack([fn(q[i:i + 1], p[i:i + 1], n[i:i + 1]) for i in range(6)])
        assert fn(q, p, n).item() == pytest.approx(per_tuple.mean().item(), rel=1e-12)


# ---- registry and errors -----------------------------------------------------------------------------

def test_get_loss_binds_options():
    q, p, n = tuples(seed=6)
    assert get_loss("sare_joint", form="euclidean")(q, p, n).item() == pytest.approx(
        loop_sare_joint(q, p, n, "euclidean", 0.07), rel=1e-12)
    assert get_loss("triplet", margin=0.2, squared=True)(q, p, n).item() == pytest.approx(
        loop_triplet(q, p, n, 0.2, True), rel=1e-12)
    assert set(LOSSES) == {"triplet", "sare_ind", "sare_joint", "sfrs_soft"}


def test_tuple_loss_binds_the_training_options_each_loss_takes():
    # The trainer's dispatch: triplet takes margin and squared, the SARE losses form and tau.
    q, p, n = tuples(seed=7)
    opts = dict(margin=0.3, squared=True, form="euclidean", tau=0.05)
    assert bind_tuple_loss("triplet", **opts)(q, p, n).item() == pytest.approx(
        loop_triplet(q, p, n, 0.3, True), rel=1e-12)
    assert bind_tuple_loss("sare_ind", **opts)(q, p, n).item() == pytest.approx(
        loop_sare_ind(q, p, n, "euclidean", 0.05), rel=1e-12)
    opts["form"] = "dot"
    assert bind_tuple_loss("sare_joint", **opts)(q, p, n).item() == pytest.approx(
        loop_sare_joint(q, p, n, "dot", 0.05), rel=1e-12)
    assert TUPLE_LOSSES == ("triplet", "sare_ind", "sare_joint")
    with pytest.raises(ValueError, match=r"unknown tuple loss 'sfrs_soft'; valid losses: triplet, sare_ind"):
        bind_tuple_loss("sfrs_soft", **opts)


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match=r"unknown loss 'sare'; valid losses: triplet, sare_ind, sare_joint"):
        get_loss("sare")
    with pytest.raises(ValueError, match=r"unknown SARE form 'cosine'; valid forms: dot, euclidean"):
        get_loss("sare_ind", form="cosine")
    with pytest.raises(ValueError, match=r"option\(s\) tau for loss 'triplet'; valid options: margin"):
        get_loss("triplet", tau=0.1)
    q, p, n = tuples()
    with pytest.raises(ValueError, match=r"valid forms: dot, euclidean"):
        sare_joint(q, p, n, form="l2")
    with pytest.raises(ValueError, match=r"expected n of shape \(B, N, D\)"):
        triplet(q, p, n[:, :, :2])
    with pytest.raises(ValueError, match=r"same shape \(B, M\)"):
        sfrs_soft(q, q[:, :2])
