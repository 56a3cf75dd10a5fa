"""What a node runs on, read when it starts and by each promotion check (for free memory):
CPU cores and memory, and its accelerators — CUDA and ROCm GPUs (through torch), Apple
Silicon (whose unified memory is the system's, and which MLX would compute on). Printed in
the node's ready block, and what block placement sizes a node by (``hydra.stage.placement``).

Detection reads the machine through ``Probe``, so tests describe machines (a laptop, a GPU
box, a small VM) without having them."""

import importlib.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hydra.errors import ConfigError

BACKENDS = ("auto", "pytorch", "mlx")


@dataclass(frozen=True)
class Accelerator:
    kind: str  # "cuda", "rocm" or "apple"
    name: str
    memory_gb: float  # total (Apple Silicon: the unified memory, shared with the system)
    free_gb: float


@dataclass(frozen=True)
class Hardware:
    cpu_cores: int  # this process may run on
    memory_gb: float
    available_gb: float  # memory free for new allocations now
    accelerators: tuple[Accelerator, ...] = ()
    system: str = "Linux"
    machine: str = "x86_64"
    mlx: bool = False  # the mlx package is importable

    @property
    def gpu(self) -> Accelerator | None:
        """The first CUDA or ROCm device: where a PyTorch node computes."""
        return next((a for a in self.accelerators if a.kind in ("cuda", "rocm")), None)

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.machine == "arm64"

    def device(self) -> str:
        """The torch device ``--device auto`` means here (ROCm builds of torch say ``cuda``)."""
        return "cuda" if self.gpu is not None else "cpu"

    def memory_for_weights_gb(self, device: str) -> float:
        """Memory a node may fill with weights on ``device``, free now: the GPU's own memory
        on a GPU, the system's otherwise (placement takes a share of it)."""
        gpu = self.gpu
        if device.startswith("cuda") and gpu is not None:
            return gpu.free_gb
        return self.available_gb

    def runtime_backend(self, requested: str = "auto") -> str:
        """``--runtime-backend``: auto takes MLX on Apple Silicon where it is installed."""
        if requested not in BACKENDS:
            raise ConfigError(f"--runtime-backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
        if requested == "mlx" and not self.mlx:
            raise ConfigError(
                "--runtime-backend mlx needs mlx and mlx-lm (pip install mlx-lm; on Linux also 'mlx[cpu]')"
            )
        if requested == "auto":
            return "mlx" if self.apple_silicon and self.mlx else "pytorch"
        return requested

    def describe(self) -> str:
        """One line for people: ``4 CPU cores, 16.0 GB memory (9.5 GB free), NVIDIA L4 (24.0 GB)``."""
        memory = f"{self.memory_gb:.1f} GB memory ({self.available_gb:.1f} GB free)"
        parts = [f"{self.cpu_cores} CPU cores", memory]
        parts += [f"{a.name} ({a.memory_gb:.1f} GB)" for a in self.accelerators] or ["no GPU"]
        return ", ".join(parts)


class Probe(Protocol):
    """Where detection reads the machine."""

    def cpu_cores(self) -> int: ...
    def memory_gb(self) -> tuple[float, float]: ...  # total, available
    def accelerators(self) -> tuple[Accelerator, ...]: ...
    def platform(self) -> tuple[str, str]: ...  # system, machine
    def has_mlx(self) -> bool: ...


class SystemProbe:
    """This machine."""

    def cpu_cores(self) -> int:
        try:
            return len(os.sched_getaffinity(0))  # a container's or taskset's share of the cores
        except (AttributeError, OSError):
            return os.cpu_count() or 1

    def memory_gb(self) -> tuple[float, float]:
        meminfo = Path("/proc/meminfo")
        if meminfo.is_file():
            fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
            total = int(fields["MemTotal"].split()[0]) / 2**20
            return total, int(fields.get("MemAvailable", fields["MemFree"]).split()[0]) / 2**20
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page / 2**30, os.sysconf("SC_AVPHYS_PAGES") * page / 2**30
        except (ValueError, OSError, AttributeError):
            return 0.0, 0.0

    def accelerators(self) -> tuple[Accelerator, ...]:
        found = []
        if importlib.util.find_spec("torch") is not None:
            import torch

            kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
            for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
                free, total = torch.cuda.mem_get_info(index)
                name = torch.cuda.get_device_name(index)
                found.append(Accelerator(kind, name, total / 2**30, free / 2**30))
        system, machine = self.platform()
        if system == "Darwin" and machine == "arm64":
            total, available = self.memory_gb()
            found.append(Accelerator("apple", "Apple Silicon GPU", total, available))
        return tuple(found)

    def platform(self) -> tuple[str, str]:
        return platform.system(), platform.machine()

    def has_mlx(self) -> bool:
        return all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))


def detect(probe: Probe | None = None) -> Hardware:
    probe = probe or SystemProbe()
    total, available = probe.memory_gb()
    system, machine = probe.platform()
    return Hardware(
        cpu_cores=probe.cpu_cores(), memory_gb=total, available_gb=available,
        accelerators=probe.accelerators(), system=system, machine=machine, mlx=probe.has_mlx(),
    )
