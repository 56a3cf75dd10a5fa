"""Keeping prompts private on strangers' machines: identity-bound key agreement, onion-wrapped
routes, per-hop sealed activations."""
