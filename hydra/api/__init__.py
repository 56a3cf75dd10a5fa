"""HTTP adapters, served by quart-trio on hypercorn inside the node's trio loop: the OpenAI
and Ollama APIs over the coordinator, the HTTP DHT, health, status and metrics.
No protocol logic here: every endpoint calls down into the coordinator or the DHT."""
