"""HTTP adapters served by quart-trio on hypercorn inside the node's trio loop: health,
network status and the HTTP DHT (later the OpenAI and Ollama APIs). No protocol logic here."""
