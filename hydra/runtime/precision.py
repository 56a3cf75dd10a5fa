"""Names of precision classes, without importing torch (route planning needs them)."""


def precision(dtype: str, quantization: str) -> str:
    """What verification compares a stage as: its dtype, and its quantization if any."""
    return dtype if quantization == "none" else f"{dtype}+{quantization}"
