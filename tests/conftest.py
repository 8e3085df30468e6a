import os

import pytest
import torch

# Without a GPU, Triton kernels run on CPU tensors in Triton's interpreter (tests/test_postprocess_fixed.py), which
# must be chosen before triton is first imported; nothing else runs Triton on a CPU-only machine.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
