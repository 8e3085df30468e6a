"""Operator names dispatched inside a block: how the tests check on a CPU what a GPU would wait for."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

# Operators that make the host wait for the device on CUDA: data-dependent shapes, scalar reads, and tensors made
# from host numbers (a copy from pageable memory).
HOST_WAITS = frozenset(
    {"aten.nonzero", "aten._local_scalar_dense", "aten.masked_select", "aten.unique", "aten.lift_fresh"}
)


class OpNames(TorchDispatchMode):
    """``with OpNames() as ops: ...`` -> ``ops.counts`` (calls per ATen operator dispatched in the block) and
    ``ops.names`` (the set of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def names(self) -> set[str]:
        return set(self.counts)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
