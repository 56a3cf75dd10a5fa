"""OpenHydra node: one process that is both a peer (serves model layers) and a coordinator.

Library packages (``p2p``, ``privacy``, ``runtime``, ``models``, ``dht``, ``stage``,
``coordinator``, ``api``) depend downward only; ``config``, ``node``, ``generate``, ``chat``
and ``cli`` assemble them into commands (layer order: README, Architecture)."""

__version__ = "0.1.0"
