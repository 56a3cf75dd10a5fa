"""OpenHydra node: one process that is both a peer (serves model layers) and a coordinator."""

__version__ = "0.1.0"
