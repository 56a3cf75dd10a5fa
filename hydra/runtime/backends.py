"""Which library runs a stage's blocks: PyTorch everywhere, or MLX (through mlx-lm) on Apple
Silicon, where it computes on the GPU's unified memory; MLX's CPU build runs the same code
on Linux, which is how the tests exercise it. ``Hardware.runtime_backend`` decides what
``--runtime-backend auto`` means."""

from pathlib import Path

import torch

from hydra.errors import ConfigError
from hydra.runtime.shard import StageBlocks, load_stage

PYTORCH, MLX = "pytorch", "mlx"


def load_span(
    backend: str,
    checkpoint_dir: Path,
    start: int,
    end: int,
    dtype: torch.dtype,
    device: torch.device,
    quantization: str = "none",
    compile: bool = False,
) -> StageBlocks:
    """Blocks [start, end) of the checkpoint, run by ``backend``. MLX blocks take and give
    torch tensors on the CPU, as ``StageBlocks`` do (``hydra.runtime.mlx_blocks``)."""
    if backend != MLX:
        return load_stage(checkpoint_dir, start, end, dtype, device, quantization, compile)
    if quantization != "none" or compile or device.type != "cpu":
        raise ConfigError(
            "the MLX backend runs unquantized, uncompiled blocks handed over on the CPU: "
            "use --quantization none, --compile off and --device cpu with it (auto chooses these)"
        )
    from hydra.runtime.mlx_blocks import load_mlx_stage  # mlx is only installed where it runs

    return load_mlx_stage(checkpoint_dir, start, end, dtype)  # StageBlocks' interface, duck-typed
