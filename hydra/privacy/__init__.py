"""Keeping prompts private on strangers' machines: identity-bound key agreement, onion-wrapped
routes, the activation channel that seals every hop, DP noise. Pure cryptography and
message shaping: no I/O."""
