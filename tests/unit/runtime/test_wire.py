"""hydra.runtime.wire: tensors to and from the wire message, bit for bit."""

import pytest
import torch

from hydra.runtime.wire import from_wire, to_wire


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_tensor_wire_roundtrip(dtype):
    tensor = torch.randn(1, 3, 8)
    back = from_wire(to_wire(tensor, dtype))
    assert back.shape == (1, 3, 8)
    assert torch.equal(back, tensor.to(back.dtype))
