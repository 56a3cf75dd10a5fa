"""The requesting side: routes over peers found in the DHT, pipelines with failover, sampling
and the generation API."""
