"""Kademlia DHT over libp2p holding signed peer records: routing table, record store, RPC
service, announce loop and the HTTP adapter. The single source of truth for discovery."""
