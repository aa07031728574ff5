"""What one training step computes on a process's tuples: the forward that DDP wraps (one pass over all
their images, global or region descriptors) and the loss (docs/method.md §4): the configured hard tuple
loss, and for SFRS generations ≥ 1 the soft loss of the anchor against the teacher's region scores."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vpr import losses
from vpr.models import EmbedNet
from vpr.numeric_precision import Precision
from vpr.train.config import TrainConfig


class TupleForward(nn.Module):
    """What DDP wraps: one forward over all images of the process's tuples, global or region output."""

    def __init__(self, model: EmbedNet):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, regions: bool) -> torch.Tensor:
        return self.model.regions(images) if regions else self.model(images)


def hard_loss(cfg: TrainConfig, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """The configured tuple loss (``--loss``) of anchors ``q``, positives ``p`` and negatives ``n``."""
    loss = losses.bind_tuple_loss(cfg.loss, margin=cfg.margin, squared=cfg.triplet_squared,
                             form=cfg.loss_form, tau=cfg.tau)
    return loss(q, p, n)


def batch_loss(cfg: TrainConfig, forward: nn.Module, images: torch.Tensor, layout: list[tuple[int, int]], *,
               precision: Precision, device: torch.device, teacher: EmbedNet | None = None):
    """Mean loss over this process's tuples (one forward over all their images); (loss, hard, soft).

    ``forward`` is the (possibly DDP-wrapped) :class:`TupleForward`, ``layout`` each tuple's (negatives,
    positives) counts, ``teacher`` the previous SFRS generation's model (generations >= 1)."""
    sfrs = cfg.method == "sfrs"
    with precision.autocast():   # the backbone only: the NetVLAD head and the losses stay float32
        out = forward(images.to(device, non_blocking=True), sfrs)
    if not sfrs:
        starts = np.cumsum([0] + [2 + n for n, _ in layout])
        q = torch.stack([out[s] for s in starts[:-1]])
        p = torch.stack([out[s + 1] for s in starts[:-1]])
        n = torch.stack([out[s + 2:s + 2 + k] for s, (k, _) in zip(starts[:-1], layout, strict=True)])
        loss = hard_loss(cfg, q, p, n)
        return loss, loss.detach(), torch.zeros(())
    hards, softs = [], []
    s0 = 0
    for n_neg, n_pos in layout:
        end = s0 + 2 + n_neg + n_pos
        regions = out[s0:end]                                           # (M, 9, D)
        q_g, p_g = regions[0, 0], regions[1, 0]
        negs = regions[2:2 + n_neg]
        if cfg.generation == 0:
            n_sel = negs[:, 0]
        else:   # each negative's region most similar to the anchor (scores detached)
            r_star = (negs.detach() @ q_g.detach()).argmax(dim=1)
            n_sel = negs[torch.arange(n_neg), r_star]
        hards.append(hard_loss(cfg, q_g[None], p_g[None], n_sel[None]))
        if cfg.generation >= 1:
            # The anchor's global descriptor against the 9 regions of each difficult positive.
            student = (regions[2 + n_neg:] @ q_g).flatten()           # P·9 scores
            with torch.no_grad():
                t_images = torch.cat([images[s0:s0 + 1], images[end - n_pos:end]]).to(device)
                with precision.autocast():
                    t_regions = teacher.regions(t_images)
                teacher_scores = (t_regions[1:] @ t_regions[0, 0]).flatten()
            softs.append(losses.sfrs_soft(student[None], teacher_scores[None], tau_student=cfg.tau,
                                          tau_teacher=cfg.teacher_temperature))
        s0 = end
    hard = torch.stack(hards).mean()
    if softs:
        soft = torch.stack(softs).mean()
        return hard + cfg.soft_weight * soft, hard.detach(), soft.detach()
    return hard, hard.detach(), torch.zeros(())
