"""Collate contract, DDP sharding, per-epoch reseeding, reproducibility and exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import coco_dict, make_coco

from singleshot.data import DevicePhotometric, ResumableSampler, SSDTrainTransform, build_loader, load_dataset
from singleshot.data.loader import collate_detection


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    data = coco_dict(num_images=10)
    data["annotations"] = [
        {"id": i + 1, "image_id": 10 + i, "category_id": 3 if i % 2 else 7, "bbox": [2 + i, 3, 20, 10 + i]}
        for i in range(10)
    ] + [{"id": 99, "image_id": 10, "category_id": 3, "bbox": [30, 20, 10, 10]}]
    return load_dataset(make_coco(tmp_path_factory.mktemp("coco"), data), "train")


def _batches(loader, epoch: int) -> list[dict]:
    loader.set_epoch(epoch)
    return list(loader)


def test_batch_contract(dataset) -> None:
    loader = build_loader(dataset, SSDTrainTransform(32), batch_size=4, shuffle=True, num_workers=0)
    batches = _batches(loader, 0)
    assert len(batches) == len(loader) == 2  # 10 images, drop_last
    b = batches[0]
    assert b["images"].shape == (4, 3, 32, 32) and b["images"].dtype == torch.float32
    m = b["boxes"].shape[1]
    assert b["boxes"].shape == (4, m, 4) and b["labels"].shape == (4, m) and b["labels"].dtype == torch.int64
    real = b["labels"] > 0
    assert (b["labels"][~real] == -1).all() and (b["boxes"][~real] == 0).all()
    assert ((b["boxes"][real] >= 0) & (b["boxes"][real] <= 1)).all()
    assert b["image_ids"].dtype == torch.int64 and b["orig_sizes"].tolist()[0] == [48, 64]


def test_device_photometric_path(dataset) -> None:
    """A loader for the CPU device finishes in the collate (float batches, channels-last on request); the
    accelerator's path (uint8 batches + colour draws, finished by DevicePhotometric) gives the same pixels."""
    cpu = build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, num_workers=0)
    dev = build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, num_workers=0, device="cpu",
                       channels_last=True)
    a, b = _batches(cpu, 1), _batches(dev, 1)
    assert "photometric" not in b[0] and b[0]["images"].dtype == torch.float32
    assert b[0]["images"].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a[0]["images"], b[0]["images"], atol=1e-4, rtol=1e-4)
    raw = collate_detection([cpu.loader.dataset[(i, s)] for i, s in list(cpu.sampler)[:5]], photometric_on_device=True)
    assert raw["images"].dtype == torch.uint8 and raw["photometric"].shape == (5, 11)
    torch.testing.assert_close(DevicePhotometric("cpu")(raw)["images"], a[0]["images"], atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_loader_finishes_on_the_device(dataset) -> None:
    cpu = _batches(build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, num_workers=0), 1)
    gpu = _batches(build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, num_workers=0,
                                device="cuda"), 1)
    assert gpu[0]["images"].is_cuda and "photometric" not in gpu[0]
    torch.testing.assert_close(gpu[0]["images"].cpu(), cpu[0]["images"], atol=1e-4, rtol=1e-4)


def test_reshuffle_per_epoch_and_reproducible(dataset) -> None:
    loader = build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, seed=3, num_workers=0)
    e0, e1 = _batches(loader, 0), _batches(loader, 1)
    assert not torch.equal(e0[0]["images"], e1[0]["images"])
    again = _batches(build_loader(dataset, SSDTrainTransform(32), batch_size=5, shuffle=True, seed=3, num_workers=0), 0)
    for x, y in zip(e0, again):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["boxes"], y["boxes"])


def test_workers_do_not_change_the_data(dataset) -> None:
    """Augmentation depends on (seed, epoch, index) only: 0 and 2 workers give identical batches."""
    kw = {"batch_size": 5, "shuffle": True, "seed": 1}
    a = _batches(build_loader(dataset, SSDTrainTransform(32), num_workers=0, **kw), 2)
    b = _batches(build_loader(dataset, SSDTrainTransform(32), num_workers=2, persistent_workers=False, **kw), 2)
    for x, y in zip(a, b):
        assert torch.equal(x["images"], y["images"]) and torch.equal(x["labels"], y["labels"])


def test_ddp_shards_cover_dataset() -> None:
    shards = [list(ResumableSampler(10, shuffle=True, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12
    indices = [i for s in shards for i, _ in s]
    assert set(indices) == set(range(10))
    seeds = {i: sd for s in shards for i, sd in s}
    single = dict(ResumableSampler(10, shuffle=True, seed=0))
    assert seeds == {i: single[i] for i in seeds}  # a sample's seed does not depend on the world size


def test_exact_mid_epoch_resume(dataset) -> None:
    def make():
        return build_loader(dataset, SSDTrainTransform(32), batch_size=2, shuffle=True, seed=5, num_workers=0)

    full = _batches(make(), 4)
    loader = make()
    loader.set_epoch(4)
    it = iter(loader)
    head = [next(it), next(it)]
    state = loader.state_dict()
    assert state["epoch"] == 4 and state["start"] == 4
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(4)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for x, y in zip(head + tail, full):
        assert torch.equal(x["images"], y["images"])
    assert len(_batches(resumed, 5)) == len(full)  # the next epoch starts from 0
