"""The torch device a node computes on, from the name its configuration uses."""

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when a device is present, else the CPU; any torch device name otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
