"""The MLPerf SSD reference's box algorithms, restated (not copied) for side-by-side timing.

They follow the reference's structure on purpose: per-image encoding with a broadcast IoU, a loss over
channel-first ``[N, C, A]`` outputs ranking negatives with a double sort, and decoding that loops over images and
classes with a Python greedy-NMS loop. Only benchmarks import this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def iou_ltrb(a: Tensor, b: Tensor) -> Tensor:
    """a [N, 4], b [M, 4] ltrb -> [N, M] IoU, with the reference's operation sequence: both inputs expanded to
    [N, M, 4], corners by max/min, negative extents zeroed by a masked assignment, areas taken on the expanded views."""
    n, m = a.shape[0], b.shape[0]
    ea = a.unsqueeze(1).expand(-1, m, -1)
    eb = b.unsqueeze(0).expand(n, -1, -1)
    lt = torch.max(ea[:, :, :2], eb[:, :, :2])
    rb = torch.min(ea[:, :, 2:], eb[:, :, 2:])
    delta = rb - lt
    delta[delta < 0] = 0
    inter = delta[:, :, 0] * delta[:, :, 1]
    da = ea[:, :, 2:] - ea[:, :, :2]
    area_a = da[:, :, 0] * da[:, :, 1]
    db = eb[:, :, 2:] - eb[:, :, :2]
    area_b = db[:, :, 0] * db[:, :, 1]
    return inter / (area_a + area_b - inter)


def encode_image(boxes: Tensor, labels: Tensor, dboxes_ltrb: Tensor, threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """One image: boxes [M, 4] ltrb normalized -> (boxes [A, 4] xywh, labels [A]), the reference's data-side step."""
    ious = iou_ltrb(boxes, dboxes_ltrb)
    best_dbox_ious, best_dbox_idx = ious.max(dim=0)
    _, best_bbox_idx = ious.max(dim=1)
    best_dbox_ious.index_fill_(0, best_bbox_idx, 2.0)
    idx = torch.arange(best_bbox_idx.shape[0])
    best_dbox_idx[best_bbox_idx[idx]] = idx
    masks = best_dbox_ious > threshold
    labels_out = torch.zeros(dboxes_ltrb.shape[0], dtype=torch.long)
    labels_out[masks] = labels[best_dbox_idx[masks]]
    boxes_out = dboxes_ltrb.clone()
    boxes_out[masks, :] = boxes[best_dbox_idx[masks], :]
    x, y = 0.5 * (boxes_out[:, 0] + boxes_out[:, 2]), 0.5 * (boxes_out[:, 1] + boxes_out[:, 3])
    w, h = boxes_out[:, 2] - boxes_out[:, 0], boxes_out[:, 3] - boxes_out[:, 1]
    return torch.stack([x, y, w, h], 1), labels_out


def loss(ploc: Tensor, plabel: Tensor, gloc: Tensor, glabel: Tensor, dboxes: Tensor) -> Tensor:
    """ploc [N, 4, A], plabel [N, C, A], gloc [N, 4, A] xywh, glabel [N, A]; dboxes [1, 4, A] xywh."""
    mask = glabel > 0
    pos_num = mask.sum(dim=1)
    gxy = 10.0 * (gloc[:, :2, :] - dboxes[:, :2, :]) / dboxes[:, 2:, :]
    gwh = 5.0 * (gloc[:, 2:, :] / dboxes[:, 2:, :]).log()
    vec_gd = torch.cat((gxy, gwh), dim=1).contiguous()
    sl1 = F.smooth_l1_loss(ploc, vec_gd, reduction="none").sum(dim=1)
    sl1 = (mask.float() * sl1).sum(dim=1)
    con = F.cross_entropy(plabel, glabel, reduction="none")
    con_neg = con.clone()
    con_neg[mask] = 0
    _, con_idx = con_neg.sort(dim=1, descending=True)
    _, con_rank = con_idx.sort(dim=1)
    neg_num = torch.clamp(3 * pos_num, max=mask.size(1)).unsqueeze(-1)
    neg_mask = con_rank < neg_num
    closs = (con * (mask.float() + neg_mask.float())).sum(dim=1)
    total = sl1 + closs
    num_mask = (pos_num > 0).float()
    pos_num = pos_num.float().clamp(min=1e-6)
    return (total * num_mask / pos_num).mean(dim=0)


def decode_batch(ploc: Tensor, plabel: Tensor, dboxes_xywh: Tensor, criteria: float = 0.5, max_output: int = 200):
    """ploc [N, 4, A], plabel [N, C, A] -> per image (boxes ltrb, labels, scores); per-image, per-class loops."""
    ploc, plabel = ploc.permute(0, 2, 1), plabel.permute(0, 2, 1)
    xy = ploc[:, :, :2] * 0.1 * dboxes_xywh[:, 2:] + dboxes_xywh[:, :2]
    wh = (ploc[:, :, 2:] * 0.2).exp() * dboxes_xywh[:, 2:]
    ltrb = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)
    probs = F.softmax(plabel, dim=-1)
    return [_decode_single(ltrb[i], probs[i], criteria, max_output) for i in range(ltrb.shape[0])]


def _decode_single(bboxes: Tensor, scores: Tensor, criteria: float, max_output: int, max_num: int = 200):
    boxes_out, scores_out, labels_out = [], [], []
    for label in range(1, scores.shape[1]):
        score = scores[:, label]
        mask = score > 0.05
        bb, score = bboxes[mask, :], score[mask]
        if score.numel() == 0:
            continue
        _, order = score.sort(dim=0)
        order = order[-max_num:]
        candidates = []
        while order.numel() > 0:
            idx = order[-1].item()
            iou = iou_ltrb(bb[order, :], bb[idx, :].unsqueeze(0)).squeeze(1)
            order = order[iou < criteria]
            candidates.append(idx)
        boxes_out.append(bb[candidates, :])
        scores_out.append(score[candidates])
        labels_out.extend([label] * len(candidates))
    if not boxes_out:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    b, s = torch.cat(boxes_out), torch.cat(scores_out)
    lab = torch.tensor(labels_out)
    _, keep = s.sort(dim=0)
    keep = keep[-max_output:]
    return b[keep], lab[keep], s[keep]
