"""What a node runs on: CPU cores, memory and accelerators (``hydra.hardware.detect``)."""
