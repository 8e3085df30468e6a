"""The evaluation loop: raw outputs that encode the ground truth score AP 1; DDP sharding (2 gloo processes, one
padded duplicate image) gives the same numbers as one process; ``singleshot eval`` end to end."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import singleshot
from singleshot.evaluation import evaluate
from singleshot.inference.core import InferenceCore

SPEC = singleshot.models.get_spec("ssd_tiny")
GT_BOXES = {  # image_id -> (H, W), boxes xyxy pixels, labels
    1: ((120, 200), [[10, 20, 90, 100], [100, 10, 190, 110]], [1, 2]),
    2: ((300, 300), [[50, 50, 250, 250]], [3]),
    3: ((80, 160), [[0, 0, 60, 70]], [2]),
    4: ((240, 320), [[30, 40, 150, 200], [160, 20, 300, 120]], [1, 1]),
    5: ((100, 100), [[10, 10, 90, 60]], [3]),
}
L2C = {1: 11, 2: 22, 3: 33}


def ground_truth() -> dict:
    images = [{"id": i, "height": hw[0], "width": hw[1]} for i, (hw, _, _) in GT_BOXES.items()]
    anns = []
    for i, (_, boxes, labels) in GT_BOXES.items():
        for (x0, y0, x1, y1), lab in zip(boxes, labels):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": L2C[lab],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    cats = [{"id": c, "name": f"c{c}"} for c in L2C.values()]
    return {"images": images, "annotations": anns, "categories": cats}


def batch_and_outputs(ids: list[int]) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """A collated batch for ``ids`` and raw outputs that decode exactly to its ground truth."""
    m = max(len(GT_BOXES[i][1]) for i in ids)
    boxes = torch.zeros(len(ids), m, 4)
    labels = torch.full((len(ids), m), -1)
    for b, i in enumerate(ids):
        (h, w), bx, lb = GT_BOXES[i]
        boxes[b, : len(bx)] = torch.tensor(bx, dtype=torch.float32) / torch.tensor([w, h, w, h])
        labels[b, : len(lb)] = torch.tensor(lb)
    offsets, target = singleshot.TargetEncoder(SPEC.anchors)(boxes, labels)
    logits = torch.nn.functional.one_hot(target, 4).float() * 12.0  # background anchors: class 0 wins
    batch = {"images": torch.zeros(len(ids), 3, 160, 160), "boxes": boxes, "labels": labels,
             "image_ids": torch.tensor(ids), "orig_sizes": torch.tensor([GT_BOXES[i][0] for i in ids])}
    return batch, (offsets, logits)


class Replay(nn.Module):
    """Stands in for a model: returns prepared outputs in order."""

    def __init__(self, outputs: list) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = list(outputs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.outputs.pop(0)


def run_eval(shards: list[list[int]], **kwargs) -> dict:
    pairs = [batch_and_outputs(ids) for ids in shards]
    model = Replay([out for _, out in pairs]).train()
    core = InferenceCore(model, spec=SPEC, device="cpu")
    result = evaluate(core, [b for b, _ in pairs], ground_truth=ground_truth(), label_to_category_id=L2C, log=None,
                      **kwargs)
    assert model.training  # restored
    return result


def test_detections_that_encode_the_ground_truth_score_one(tmp_path) -> None:
    result = run_eval([[1, 2], [3, 4], [5]], results_file=str(tmp_path / "res.json"))
    for name in ("AP", "AP50", "AP75", "APm", "APl", "AR10", "AR100"):  # AR1 < 1: image 4 has 2 of a class
        assert result[name] == pytest.approx(1.0, abs=1e-6), name
    assert result["APs"] == -1.0  # no small objects in this ground truth: pycocotools' convention
    assert result["num_images"] == 5 and result["num_detections"] == 7
    assert set(result["per_class_AP"]) == {"c11", "c22", "c33"}
    assert (tmp_path / "res.json").stat().st_size > 0


def test_subset_of_images_is_scored_on_those_images_only() -> None:
    result = run_eval([[1, 2]])
    assert result["num_images"] == 2 and result["AP"] == pytest.approx(1.0)


def _ddp_worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        shards = [[[1, 2], [3]], [[4, 5], [1]]][rank]  # rank 1 repeats image 1, as a padded sampler does
        result = run_eval(shards)
        queue.put((rank, result["AP"], result["num_images"], result["num_detections"]))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # ~20 s: spawns two processes
def test_ddp_shards_are_gathered_and_deduplicated() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(port, queue), nprocs=2, start_method="spawn")
    got = sorted(queue.get(timeout=30) for _ in range(2))
    assert got == [(0, pytest.approx(1.0), 5, 7), (1, pytest.approx(1.0), 5, 7)]


def test_eval_cli_on_a_small_synthetic_coco_set(tmp_path, capsys) -> None:
    from singleshot.checkpoint import atomic_save, make_checkpoint
    from singleshot.cli import main
    from singleshot.data.synth import CLASSES, generate

    data = generate(tmp_path / "synth", num_train=1, num_val=3, image_size=(96, 64))
    ckpt = tmp_path / "m.pt"
    atomic_save(make_checkpoint(singleshot.build_model("ssd_tiny", num_classes=len(CLASSES) + 1), list(CLASSES)), ckpt)
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--workers", "0", "--batch-size", "2",
                 "--metrics-json", str(tmp_path / "metrics.json"), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    assert "circle" in out  # per-class table
    results = tmp_path / "eval_val_results.json"
    assert results.is_file()
    assert np.isfinite(__import__("json").loads((tmp_path / "metrics.json").read_text())["AP"])
