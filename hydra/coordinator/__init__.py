"""The requesting side: routes over peers found in the DHT, pipelines with failover, sampling
and the generation API (``Coordinator.stream``). Speaks no HTTP: ``hydra.api`` adapts it."""
