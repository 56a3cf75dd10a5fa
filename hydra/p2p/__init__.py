"""libp2p plumbing: identity, the host factory (with py-libp2p 0.8.1 workarounds), framed
streams and the request/reply loop. Moves bytes; knows nothing of DHT or inference logic."""
