"""Training losses of NetVLAD, SARE and SFRS, batched over tuples and negatives.

Shapes: ``q`` (B, D) anchors, ``p`` (B, D) positives, ``n`` (B, N, D) negatives, all L2-normalised
descriptors. Every loss returns a scalar tensor and contains no Python loop over B or N.

* ``triplet``    -- Euclidean triplet margin loss, reference (OpenIBL) form or NetVLAD-paper form.
* ``sare_ind``   -- SARE, one softmax per (positive, negative) pair.
* ``sare_joint`` -- SARE, one softmax over the positive and all negatives.
* ``sfrs_soft``  -- SFRS soft-label loss: cross-entropy of teacher soft targets against the student.

``get_loss(name, **kwargs)`` looks a loss up in ``LOSSES`` and binds its options, raising ``ValueError`` for
an unknown name, option or form, so a bad configuration fails before training starts.
``bind_tuple_loss`` is the training loss (``--loss``, one of ``TUPLE_LOSSES``) with the options of the
training configuration it takes.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the losses: vpr.train.config takes the loss names from here, and `vpr train
# --help` should not pay for importing torch.

SARE_FORMS = ("dot", "euclidean")
TUPLE_LOSSES = ("triplet", "sare_ind", "sare_joint")  # the losses on (q, p, negatives) tuples: --loss

# torch.nn.functional.pairwise_distance (used by triplet_margin_loss) adds this inside the norm.
_TRIPLET_EPS = 1e-6


def _check_tuple(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> None:
    if q.dim() != 2 or p.shape != q.shape:
        raise ValueError(f"expected q and p of the same shape (B, D), "
                         f"got {tuple(q.shape)} and {tuple(p.shape)}")
    if n.dim() != 3 or n.shape[0] != q.shape[0] or n.shape[2] != q.shape[1]:
        raise ValueError(f"expected n of shape (B, N, D) = ({q.shape[0]}, N, {q.shape[1]}), "
                         f"got {tuple(n.shape)}")


def triplet(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = 0.1,
            squared: bool = False) -> torch.Tensor:
    r"""Triplet margin loss over every (anchor, negative) pair.

    ``squared=False`` (the reference implementation's form, the default)::

        L = mean_{b,j} max(0, ‖q_b − p_b + ε‖ − ‖q_b − n_bj + ε‖ + √margin),   ε = 1e-6

    i.e. non-squared distances, margin √0.1 ≈ 0.316 for the default ``margin=0.1``, mean over tuples and
    negatives. ε is added to the difference vector exactly as ``torch.nn.functional.triplet_margin_loss``
    (p=2, eps=1e-6) does, so this equals that function with ``margin=math.sqrt(margin)`` applied to the
    anchor and positive expanded over the N negatives.

    ``squared=True`` (the NetVLAD paper's form)::

        L = mean_b Σ_j max(0, ‖q_b − p_b‖² − ‖q_b − n_bj‖² + margin)

    i.e. squared distances, margin 0.1, sum over negatives, mean over tuples.
    """
    import torch
    import torch.nn.functional as F

    _check_tuple(q, p, n)
    if margin < 0:
        raise ValueError(f"triplet margin must be >= 0, got {margin}")
    if squared:
        d_ap = (q - p).pow(2).sum(-1)  # (B,)
        d_an = (q.unsqueeze(1) - n).pow(2).sum(-1)  # (B, N)
        return F.relu(d_ap.unsqueeze(1) - d_an + margin).sum(1).mean()
    d_ap = torch.linalg.vector_norm(q - p + _TRIPLET_EPS, dim=-1)
    d_an = torch.linalg.vector_norm(q.unsqueeze(1) - n + _TRIPLET_EPS, dim=-1)
    return F.relu(d_ap.unsqueeze(1) - d_an + math.sqrt(margin)).mean()


def _sare_logits(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, form: str,
                 tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits s(p) (B,) and s(n_j) (B, N) of the SARE losses."""
    import torch

    _check_tuple(q, p, n)
    if form == "dot":
        if tau <= 0:
            raise ValueError(f"SARE temperature tau must be > 0, got {tau}")
        return (q * p).sum(-1) / tau, torch.einsum("bd,bnd->bn", q, n) / tau
    if form == "euclidean":
        return -(q - p).pow(2).sum(-1), -(q.unsqueeze(1) - n).pow(2).sum(-1)
    raise ValueError(f"unknown SARE form {form!r}; valid forms: {', '.join(SARE_FORMS)}")


def sare_ind(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, form: str = "dot",
             tau: float = 0.07) -> torch.Tensor:
    r"""SARE with independent softmaxes, one per negative::

        L = mean_{b,j} −log( e^{s(p_b)} / (e^{s(p_b)} + e^{s(n_bj)}) ) = mean_{b,j} softplus(s(n_bj) − s(p_b))

    with logits s(x) = ⟨q_b, x⟩ / τ for ``form="dot"`` (the form that produced the published SARE/SFRS
    numbers, τ = 0.07) or s(x) = −‖q_b − x‖² for ``form="euclidean"`` (Gaussian kernel; ``tau`` unused).
    """
    import torch.nn.functional as F

    s_p, s_n = _sare_logits(q, p, n, form, tau)
    return F.softplus(s_n - s_p.unsqueeze(1)).mean()


def sare_joint(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, form: str = "dot",
               tau: float = 0.07) -> torch.Tensor:
    r"""SARE with one softmax over the positive and all N negatives::

        L = mean_b −log( e^{s(p_b)} / (e^{s(p_b)} + Σ_j e^{s(n_bj)}) )
          = mean_b logsumexp(s(p_b), s(n_b1), …, s(n_bN)) − s(p_b)

    with the logits s of :func:`sare_ind`.
    """
    import torch

    s_p, s_n = _sare_logits(q, p, n, form, tau)
    logits = torch.cat([s_p.unsqueeze(1), s_n], dim=1)
    return (torch.logsumexp(logits, dim=1) - s_p).mean()


def sfrs_soft(student: torch.Tensor, teacher: torch.Tensor, tau_student: float = 0.07,
              tau_teacher: float = 0.07) -> torch.Tensor:
    r"""SFRS soft-label loss: cross-entropy with the teacher's softened similarities as targets::

        L = mean_b Σ_m −softmax(teacher_b / τ_t)_m · log_softmax(student_b / τ_s)_m

    ``student`` and ``teacher`` are (B, M) similarity scores (in SFRS, M = P·9: the query's global
    descriptor against the 9 regions of each of the P difficult positives). The teacher is detached: no
    gradient flows into it. SFRS uses τ_s = 0.07 and τ_t = 0.07, 0.07, 0.06, 0.05 for generations 0..3.
    """
    import torch.nn.functional as F

    if student.dim() != 2 or teacher.shape != student.shape:
        raise ValueError(f"expected student and teacher scores of the same shape (B, M), "
                         f"got {tuple(student.shape)} and {tuple(teacher.shape)}")
    if tau_student <= 0 or tau_teacher <= 0:
        raise ValueError(f"temperatures must be > 0, "
                         f"got tau_student={tau_student}, tau_teacher={tau_teacher}")
    target = F.softmax(teacher.detach() / tau_teacher, dim=1)
    return -(target * F.log_softmax(student / tau_student, dim=1)).sum(1).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "triplet": triplet,
    "sare_ind": sare_ind,
    "sare_joint": sare_joint,
    "sfrs_soft": sfrs_soft,
}


def get_loss(name: str, **kwargs) -> Callable[..., torch.Tensor]:
    """The loss ``name`` from ``LOSSES`` with its options (margin, form, tau, ...) bound.

    Raises ``ValueError`` naming the valid choices for an unknown loss name, option or SARE form.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
    fn = LOSSES[name]
    params = inspect.signature(fn).parameters.values()
    options = [p.name for p in params if p.default is not inspect.Parameter.empty]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for loss {name!r}; "
                         f"valid options: {', '.join(options)}")
    if "form" in kwargs and kwargs["form"] not in SARE_FORMS:
        raise ValueError(f"unknown SARE form {kwargs['form']!r}; valid forms: {', '.join(SARE_FORMS)}")
    return functools.partial(fn, **kwargs)


def bind_tuple_loss(name: str, *, margin: float, squared: bool, form: str,
               tau: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The tuple loss ``name`` (one of ``TUPLE_LOSSES``) with the options it takes bound: triplet takes
    ``margin`` and ``squared``, the SARE losses ``form`` and ``tau``."""
    if name not in TUPLE_LOSSES:
        raise ValueError(f"unknown tuple loss {name!r}; valid losses: {', '.join(TUPLE_LOSSES)}")
    options = {"margin": margin, "squared": squared, "form": form, "tau": tau}
    takes = inspect.signature(LOSSES[name]).parameters
    return get_loss(name, **{key: value for key, value in options.items() if key in takes})
