"""Counting a training step's cost without running it: FLOPs and the peak of live tensor bytes.

Pure torch, used by benchmarks/train_cost.py and tested on small modules
(tests/unit/test_cost_counting.py).

- ``LiveBytes``: a dispatch mode that tracks every tensor storage an op creates, from its
  creation until it is freed (a weak reference on the storage), and keeps the peak of the
  sum. That sum is what a CUDA caching allocator must hold for tensors (it rounds each block
  up to 512 bytes, and fragmentation comes on top). Views share their base's storage and are
  counted once. Storages created before the mode was entered are not seen: build the models
  inside it, or ``add`` them.
- ``data_free_scalars``: the same mode answers ``.item()``/``.tolist()``/``bool()`` on fake tensors
  (which hold no values) with a fixed number, so code that reads a loss or checks ``isfinite``
  runs unchanged. The counts never depend on values.
- FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention:
  2 per multiply-add; elementwise ops count 0, as there). Its table lacks the CPU's fused
  attention kernel (what ``scaled_dot_product_attention`` runs on a CPU, and under fake tensors),
  so that kernel is counted with the formulas of the CUDA ones (``ATTENTION_ON_CPU``).

Under ``torch._subclasses.FakeTensorMode`` no tensor holds memory or data, so a full-size step
(SDXL's 2.6B-parameter UNet) is counted in seconds on a CPU; shapes, dtypes and the creation
and freeing of tensors are those of a real run (the tests compare both).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

GiB = 2**30



def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_aten = torch.ops.aten
ATTENTION_ON_CPU = {  # the formulas torch applies to its CUDA flash kernels (same leading arguments)
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


class LiveBytes(TorchDispatchMode):
    """Track live tensor storages created under this mode; ``live`` and ``peak`` in bytes.

    ``data_free_scalars``: answer reads of a tensor's value (``_local_scalar_dense``) with 1
    (0 for integer tensors) instead of running them: fake tensors have no values.
    """

    def __init__(self, data_free_scalars: bool = False):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.data_free_scalars = data_free_scalars
        self._seen: dict[int, int] = {}  # id(storage) -> bytes, while it lives
        self._marks: dict[str, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def add(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage (once) as live until it is freed."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        size = storage.nbytes()
        self._seen[key] = size
        weakref.finalize(storage, self._release, key)
        self.live += size
        self.peak = max(self.peak, self.live)

    def reset_peak(self) -> None:
        self.peak = self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.data_free_scalars and func is torch.ops.aten._local_scalar_dense.default:
            t = args[0]
            if t.dtype.is_floating_point or t.dtype.is_complex:
                return 1.0
            return True if t.dtype == torch.bool else 0
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.add(t)
        return out


@dataclass
class StepCost:
    """One counted stretch of work: FLOPs, the peak of live tensor bytes, and what was live at its start."""

    flops: int
    peak_bytes: int
    start_bytes: int
    flops_by_module: dict[str, int]

    @property
    def tflop(self) -> float:
        return self.flops / 1e12

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GiB


class CostMeter:
    """Live bytes of everything run inside it; FLOPs between ``start()`` and ``stop()``, the stretch reported.

    ``fake``: run under FakeTensorMode (no memory, no data); models built inside count as created.
    FLOPs are counted only between ``start()`` and ``stop()`` (the counter's hooks slow fake ops down).
    """

    def __init__(self, *, fake: bool = True, depth: int = 2):
        self.fake = fake
        self.bytes = LiveBytes(data_free_scalars=fake)
        self.depth = depth
        self._flops: FlopCounterMode | None = None
        self._stack = contextlib.ExitStack()
        self._start_bytes = 0
        self.cost: StepCost | None = None

    def __enter__(self) -> CostMeter:
        if self.fake:
            from torch._subclasses.fake_tensor import FakeTensorMode

            self._stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
            self._stack.enter_context(_same_device_moves_in_place())
        self._stack.enter_context(self.bytes)
        return self

    def __exit__(self, *exc) -> None:
        if self._flops is not None:
            self._flops.__exit__(None, None, None)
            self._flops = None
        self._stack.close()

    def start(self) -> None:
        """Begin the reported stretch: the peak restarts from what is live now."""
        self.bytes.reset_peak()
        self._start_bytes = self.bytes.live
        self._flops = FlopCounterMode(display=False, depth=self.depth, custom_mapping=ATTENTION_ON_CPU)
        self._flops.__enter__()

    def stop(self) -> StepCost:
        if self._flops is None:
            raise RuntimeError("CostMeter.stop() before start()")
        flops, self._flops = self._flops, None
        flops.__exit__(None, None, None)
        by = {m: sum(v.values()) for m, v in flops.get_flop_counts().items()}
        self.cost = StepCost(flops.get_total_flops(), self.bytes.peak, self._start_bytes,
                             {m: n for m, n in by.items() if n})
        return self.cost


@contextlib.contextmanager
def _same_device_moves_in_place():
    """``module.to(device)`` where every tensor already is: return the module (a no-op, as torch does for real
    tensors). For fake parameters torch instead swaps each one for a copy, which FakeTensorMode's weak
    references refuse ("Couldn't swap"). Moves that change anything go to torch unchanged."""
    original = torch.nn.Module.to

    def to(self, *args, **kwargs):
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is None and memory_format is None:
            tensors = [*self.parameters(), *self.buffers()]
            if device is None or all(t.device == device for t in tensors):
                return self
        return original(self, *args, **kwargs)

    torch.nn.Module.to = to
    try:
        yield
    finally:
        torch.nn.Module.to = original
