"""hydra.coordinator.pipeline: a failover's replayed history packed under the frame limit."""

import torch

from hydra.coordinator.pipeline import pack_history
from hydra.runtime.wire import to_wire
from protocols import inference
from protocols.codec import encode


def test_a_replayed_history_fits_the_frame_limit():
    """A long prompt then thousands of one-token steps (hidden size 1024): every replay
    message, its ``chunks`` list included, stays under the frame cap. Packed by tensor bytes
    alone, the whole history went into one message a few hundred bytes over the cap, and a
    failover could never succeed."""
    width = 1024
    history = [torch.zeros(1, 4000, width)] + [torch.zeros(1, 1, width)] * 4191
    batches = pack_history(history, "float32")
    packed = [t for batch in batches for t in batch]
    assert len(packed) == len(history) and all(a is b for a, b in zip(packed, history, strict=True))
    for batch in batches:
        step = inference.Step(position=0, chunks=tuple(t.shape[1] for t in batch),
                              hidden=to_wire(torch.cat(batch, dim=1), "float32"))
        assert len(encode(step)) <= inference.MAX_FRAME
    everything = inference.Step(position=0, chunks=tuple(t.shape[1] for t in history),
                                hidden=to_wire(torch.cat(history, dim=1), "float32"))
    assert len(encode(everything)) > inference.MAX_FRAME  # the case that needed splitting
