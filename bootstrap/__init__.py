"""Signposts: DHT-only nodes that help new peers find the swarm (``hydra signpost``).
They hold no model and answer no inference; they may relay (circuit v2) for NATed peers."""
