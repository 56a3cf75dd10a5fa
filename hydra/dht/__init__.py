"""Kademlia DHT over libp2p holding signed peer records: routing table, record store, RPC
service, proof of work and the announce loop. The single source of truth for discovery;
it knows nothing of inference, and its HTTP face lives in ``hydra.api``."""
