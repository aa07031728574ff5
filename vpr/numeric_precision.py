"""Numeric precision and memory layout of the convolutional forward pass (extraction, mining, training).

``--precision`` is one of ``fp32 | tf32 | bf16 | fp16 | auto``:

* ``fp32``: plain float32 everywhere. On CUDA this includes the convolutions and matrix products: TF32 (the
  10-bit-mantissa tensor-core mode torch's cuDNN convolutions use by default on Ampere and newer) is
  switched off inside the precision's block, so a features file that says fp32 was computed in fp32.
* ``tf32``: CUDA only: float32 tensors, with TF32 tensor-core maths allowed in convolutions and matrix
  products (faster on Ampere and newer, about 1e-3 relative error per product).
* ``bf16``: the backbone runs under ``torch.autocast`` with bfloat16 (CPU or CUDA).
* ``fp16``: float16 autocast, CUDA only (on the CPU float16 convolutions are slow and not what autocast
  is for).
* ``auto``: bf16 where the hardware runs it fast, fp32 elsewhere: a CUDA device with native bfloat16
  (Ampere or newer), or an x86 CPU whose ``/proc/cpuinfo`` flags list ``amx_bf16`` (AMX) or
  ``avx512_bf16``. ``torch.backends.cpu.get_cpu_capability()`` is not enough for this: it reports
  ``AVX512`` for CPUs with and without the bfloat16 instructions, so the kernel's flags are read.

Whatever the precision, the NetVLAD head (soft-assignment softmax with α in the hundreds, residual
aggregation, normalisations, PCA projection) runs in float32: ``EmbedNet`` and ``NetVLAD`` switch autocast
off around it (:func:`autocast_off`), and descriptors are accumulated and normalised in float32.

:func:`resolve_precision` turns the option into a :class:`Precision` once per (option, device) and logs
the choice, e.g. ``precision: bf16 (auto: CPU has AVX512-BF16)``. Channels-last (NHWC) memory layout
lets oneDNN/cuDNN use their fastest convolution kernels; :func:`channels_last` applies it to a model for
the duration of a block and restores the previous layout.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vpr.errors import VprError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

# torch is imported inside the functions: the command modules import the constants for their --help.
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
_DTYPE_NAMES = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16", "fp16": "float16"}
CUDA_ONLY = {"tf32": "TF32 tensor-core maths", "fp16": "float16 autocast"}
# /proc/cpuinfo flags of x86 CPUs with native bfloat16 matrix instructions, fastest first.
_CPU_BF16_FLAGS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))

PRECISION_HELP = ("numeric precision of the backbone: fp32 (TF32 off on CUDA), tf32 (CUDA only: float32 with "
                  "TF32 tensor cores), bf16 (CPU or CUDA), fp16 (CUDA only) or auto (bf16 on a CUDA GPU with "
                  "bfloat16 or a CPU with AMX-BF16/AVX512-BF16, else fp32); the NetVLAD head and the "
                  "descriptors stay float32 (TF32 off)")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is fp32, tf32, bf16 or fp16; ``reason`` says why (for the log)."""

    name: str
    device_type: str
    reason: str = "requested"

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, _DTYPE_NAMES[self.name])

    @property
    def reduced(self) -> bool:
        """True when the backbone runs under autocast (bf16 or fp16)."""
        return self.name in ("bf16", "fp16")

    def math(self) -> contextlib.AbstractContextManager:
        """A block whose float32 convolutions and matrix products are what the name says: on CUDA, TF32
        allowed for tf32 only (off for fp32, and for the float32 parts of bf16/fp16); elsewhere a no-op.
        The backward pass of training runs in this block too."""
        if self.device_type != "cuda":
            return contextlib.nullcontext()
        return cuda_tf32(self.name == "tf32")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """:meth:`math`, plus autocast to this precision on its device type for bf16 and fp16."""
        import torch

        with self.math():
            if not self.reduced:
                yield
                return
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                yield

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@contextlib.contextmanager
def cuda_tf32(allowed: bool) -> Iterator[None]:
    """TF32 in CUDA convolutions (cuDNN) and matrix products allowed or not inside the block; the previous
    settings are restored after it."""
    import torch

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32, matmul.allow_tf32 = allowed, allowed
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU feature flags of the first ``flags`` line of /proc/cpuinfo; None when it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def cuda_has_bf16(device: torch.device) -> bool:
    """Native (not emulated) bfloat16 on this CUDA device (compute capability 8.0 or newer, or ROCm)."""
    import torch

    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def choose_precision(requested: str, device_type: str, *, flags: Iterable[str] | None = None,
                     cuda_bf16: bool = False) -> Precision:
    """Resolve ``requested`` for a device type, given what the hardware offers (no detection here).

    ``flags`` are the CPU's /proc/cpuinfo flags (None: unknown), ``cuda_bf16`` whether the CUDA device has
    native bfloat16. Raises VprError for an unknown option or fp16 off CUDA.
    """
    if requested not in PRECISIONS:
        raise VprError(f"--precision {requested}: not one of {', '.join(PRECISIONS)}")
    if requested in CUDA_ONLY and device_type != "cuda":
        raise VprError(f"--precision {requested}: {CUDA_ONLY[requested]} is for CUDA devices only, this "
                       f"device is {device_type}; use bf16 or fp32")
    if requested != "auto":
        return Precision(requested, device_type)
    if device_type == "cuda":
        if cuda_bf16:
            return Precision("bf16", "cuda", "auto: CUDA device has bfloat16")
        return Precision("fp32", "cuda", "auto: CUDA device without native bfloat16")
    if device_type == "cpu":
        if flags is None:
            return Precision("fp32", "cpu", "auto: CPU flags unknown (no /proc/cpuinfo)")
        flags = set(flags)
        for flag, name in _CPU_BF16_FLAGS:
            if flag in flags:
                return Precision("bf16", "cpu", f"auto: CPU has {name}")
        return Precision("fp32", "cpu", "auto: CPU has neither AMX-BF16 nor AVX512-BF16")
    return Precision("fp32", device_type, f"auto: no fast reduced precision known for {device_type}")


@functools.cache
def _resolve(requested: str, device: torch.device, purpose: str) -> Precision:
    flags = cpu_flags() if device.type == "cpu" else None
    cuda_bf16 = device.type == "cuda" and cuda_has_bf16(device)
    precision = choose_precision(requested, device.type, flags=flags, cuda_bf16=cuda_bf16)
    if precision.name == "bf16" and device.type == "cpu" and flags is not None \
            and not any(f in flags for f, _ in _CPU_BF16_FLAGS):
        log.warning("precision: bf16 requested on a CPU without AMX-BF16/AVX512-BF16; it will be emulated "
                    "and probably slower than fp32")
    if precision.name == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise VprError(f"--precision bf16: {device} has no native bfloat16 support; use fp16 or fp32")
    log.info("precision: %s%s", precision, f" for {purpose}" if purpose else "")
    return precision


def resolve_precision(requested: str | Precision, device: str | torch.device, purpose: str = "") -> Precision:
    """The :class:`Precision` for ``device``; detected and logged once per (option, device, purpose).

    ``purpose`` only labels the log line (e.g. "the training forward"). A :class:`Precision` passes
    through unchanged, so callers may resolve once and hand the result on.
    """
    import torch

    if isinstance(requested, Precision):
        return requested
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _resolve(str(requested), device, purpose)


def autocast_off(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """A block where autocast is disabled on ``tensor``'s device type (float32 maths stays float32)."""
    import torch

    device_type = tensor.device.type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Keep the 4-d parameters and buffers of ``model`` in channels-last layout inside the block.

    The parameter objects stay the same (optimisers and DDP keep their references); only their storage
    layout changes, and the previous layout of each tensor is restored on exit.
    """
    import torch

    if not enabled:
        yield model
        return
    tensors = [t for t in [*model.parameters(), *model.buffers()] if t.dim() == 4]
    was_cl = [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in tensors]
    with torch.no_grad():
        for t in tensors:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        with torch.no_grad():
            for t, cl in zip(tensors, was_cl, strict=True):
                if not cl:
                    t.data = t.data.contiguous()


def to_channels_last(batch: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """An image batch (B, C, H, W) in channels-last layout (unchanged when disabled or not 4-d)."""
    import torch

    if not enabled or batch.dim() != 4:
        return batch
    return batch.contiguous(memory_format=torch.channels_last)
