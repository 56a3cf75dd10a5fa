"""torch tensors to and from the ``Tensor`` wire message (raw bytes, no copies of pickles)."""

import torch

from protocols.inference import Tensor

WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def to_wire(tensor: torch.Tensor, dtype: str) -> Tensor:
    flat = tensor.detach().to("cpu", WIRE_DTYPES[dtype]).contiguous()
    return Tensor(dtype=dtype, shape=tuple(flat.shape), data=flat.view(torch.uint8).numpy().tobytes())


def from_wire(message: Tensor) -> torch.Tensor:
    """The tensor ``message`` describes (its byte count was checked when it was decoded)."""
    flat = torch.frombuffer(bytearray(message.data), dtype=WIRE_DTYPES[message.dtype])
    return flat.view(*message.shape)
