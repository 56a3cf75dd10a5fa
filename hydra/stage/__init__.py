"""Serving a span of transformer blocks to peers over the inference protocol."""
