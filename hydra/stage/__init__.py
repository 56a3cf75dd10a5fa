"""Serving a span of transformer blocks to peers over the inference protocol: sessions and
their limits, links to the next hop, and which blocks to serve. Never plans routes."""
