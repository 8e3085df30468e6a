"""Operator names dispatched inside a block: how the tests check on a CPU what a GPU would wait for."""

from __future__ import annotations

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

# Operators that make the host wait for the device on CUDA: data-dependent shapes, scalar reads, and tensors made
# from host numbers (a copy from pageable memory).
HOST_WAITS = frozenset(
    {"aten.nonzero", "aten._local_scalar_dense", "aten.masked_select", "aten.unique", "aten.lift_fresh"}
)


class OpNames(TorchDispatchMode):
    """``with OpNames() as ops: ...`` -> ``ops.names``, the set of ATen operators dispatched in the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
