"""hydra.hardware.detect on described machines (a laptop, a GPU box, a small VM, a Mac) and on
this one; how many of a catalog model's blocks each can serve, and which larger models each
could be promoted to."""

import os

import pytest
import torch

from hydra.errors import ConfigError
from hydra.hardware.detect import Accelerator, detect
from hydra.models.catalog import load_catalog
from hydra.stage.placement import blocks_that_fit, larger_models


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
SMALL_VM = Described(1, (2.0, 1.2))
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


def anything(spec: object) -> bool:
    return True


def test_which_larger_models_each_machine_could_move_to() -> None:
    catalog = load_catalog()
    smollm2 = catalog.resolve("smollm2")
    room = {m: detect(m).memory_for_weights_gb(detect(m).device()) for m in (GPU_BOX, SMALL_VM)}
    on_gpu = larger_models(catalog.models, smollm2, room[GPU_BOX], anything)
    assert [s.id for s in on_gpu] == [s.id for s in sorted(catalog.models, key=lambda s: -s.parameters)][:-1]
    # 0.72 GB of a machine with 1.2 GB free holds one 9B block (0.6 GB) but no 27B block (0.9 GB)
    assert on_gpu[0].id == "openhydra-qwen3.5-27b"
    assert larger_models(catalog.models, smollm2, room[SMALL_VM], anything)[0].id == "openhydra-qwen3.5-9b"
    # only models whose weights the machine can get, and nothing at or below the current one
    here = larger_models(catalog.models, smollm2, room[GPU_BOX], lambda s: s.id.endswith("2b"))
    assert [s.id for s in here] == ["openhydra-qwen3.5-2b"]
    assert larger_models(catalog.models, on_gpu[0], room[GPU_BOX], anything) == []


def test_this_machine() -> None:
    hardware = detect()
    print(hardware.describe())
    assert hardware.cpu_cores == len(os.sched_getaffinity(0))
    assert 0 < hardware.available_gb <= hardware.memory_gb
    assert (hardware.gpu is not None) == torch.cuda.is_available()
    assert hardware.device() == ("cuda" if torch.cuda.is_available() else "cpu")
