"""Model runtime: weight sources, checkpoint reading, stage blocks and the client head."""
