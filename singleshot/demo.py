"""End-to-end smoke run on random data until the training engine lands (kept small: seconds on a CPU)."""

from __future__ import annotations

import torch

import singleshot


def main() -> None:
    torch.manual_seed(0)
    model = singleshot.build_model("ssd_tiny", num_classes=4)
    encode = singleshot.TargetEncoder(model.spec.anchors)
    loss_fn = singleshot.build_loss(model.spec)
    post = singleshot.build_postprocessor(model.spec)
    images = torch.randn(4, 3, 160, 160)
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.7]]]).repeat(4, 1, 1)
    labels = torch.tensor([[1], [2], [3], [1]])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    offsets, target = encode(boxes, labels)
    for step in range(30):
        out = loss_fn(*model(images), offsets, target)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if step % 10 == 0:
            print(f"step {step}: loss {out['loss'].item():.3f}")
    model.eval()
    dets = post(*model(images), torch.tensor([[480, 640]] * 4))
    print("detections per image:", [len(d["boxes"]) for d in dets])


if __name__ == "__main__":
    main()
