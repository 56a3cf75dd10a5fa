"""Wire definitions shared by every OpenHydra component: protocol IDs, message schemas,
the msgpack codec, frame limits and typed errors.

Pure data and codecs: nothing here performs I/O or knows about libp2p hosts."""
