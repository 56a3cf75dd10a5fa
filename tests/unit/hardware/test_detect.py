"""hydra.hardware.detect on described machines (a laptop, a GPU box, a small VM, a Mac) and on
this one; and how many of a catalog model's blocks each can serve."""

import os

import pytest
import torch

from hydra.errors import ConfigError
from hydra.hardware.detect import Accelerator, detect
from hydra.models.catalog import load_catalog
from hydra.stage.placement import blocks_that_fit


class Described:
    """A machine given by its figures."""

    def __init__(self, cores: int, memory: tuple[float, float], gpus: tuple[Accelerator, ...] = (),
                 system: tuple[str, str] = ("Linux", "x86_64"), mlx: bool = False) -> None:
        self._cores, self._memory, self._gpus, self._system, self._mlx = cores, memory, gpus, system, mlx

    def cpu_cores(self) -> int:
        return self._cores

    def memory_gb(self) -> tuple[float, float]:
        return self._memory

    def accelerators(self) -> tuple[Accelerator, ...]:
        return self._gpus

    def platform(self) -> tuple[str, str]:
        return self._system

    def has_mlx(self) -> bool:
        return self._mlx


LAPTOP = Described(8, (8.0, 5.0))
GPU_BOX = Described(16, (64.0, 60.0), (Accelerator("cuda", "NVIDIA RTX 4090", 24.0, 23.0),))
VM = Described(2, (4.0, 2.5))
APPLE_GPU = Accelerator("apple", "Apple Silicon GPU", 32.0, 20.0)
MAC = Described(10, (32.0, 20.0), (APPLE_GPU,), ("Darwin", "arm64"), mlx=True)


def test_described_machines() -> None:
    laptop, box, vm, mac = (detect(m) for m in (LAPTOP, GPU_BOX, VM, MAC))
    assert laptop.describe() == "8 CPU cores, 8.0 GB memory (5.0 GB free), no GPU"
    assert box.describe() == "16 CPU cores, 64.0 GB memory (60.0 GB free), NVIDIA RTX 4090 (24.0 GB)"
    assert (laptop.device(), box.device(), vm.device(), mac.device()) == ("cpu", "cuda", "cpu", "cpu")
    assert box.memory_for_weights_gb("cuda") == 23.0 and box.memory_for_weights_gb("cpu") == 60.0
    assert vm.memory_for_weights_gb("cpu") == 2.5
    assert [m.runtime_backend() for m in (laptop, box, vm, mac)] == ["pytorch"] * 3 + ["mlx"]
    assert mac.runtime_backend("pytorch") == "pytorch"
    with pytest.raises(ConfigError, match="mlx"):
        laptop.runtime_backend("mlx")
    with pytest.raises(ConfigError):
        laptop.runtime_backend("tpu")


def test_what_each_machine_can_serve() -> None:
    catalog = load_catalog()
    smollm2, big = catalog.resolve("smollm2"), max(catalog.models, key=lambda m: m.parameters)
    for machine in (LAPTOP, GPU_BOX, VM):
        hardware = detect(machine)
        room = hardware.memory_for_weights_gb(hardware.device())
        assert blocks_that_fit(smollm2, room) == smollm2.num_layers
    small = blocks_that_fit(big, detect(VM).memory_for_weights_gb("cpu"))
    large = blocks_that_fit(big, detect(GPU_BOX).memory_for_weights_gb("cuda"))
    assert 1 <= small < large <= big.num_layers


def test_this_machine() -> None:
    hardware = detect()
    print(hardware.describe())
    assert hardware.cpu_cores == len(os.sched_getaffinity(0))
    assert 0 < hardware.available_gb <= hardware.memory_gb
    assert (hardware.gpu is not None) == torch.cuda.is_available()
    assert hardware.device() == ("cuda" if torch.cuda.is_available() else "cpu")
