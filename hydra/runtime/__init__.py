"""Model runtime: weight sources, checkpoint reading, stage blocks and the client head, what a
session costs in memory, and the one compute thread. Runs models; knows nothing of the network."""
