"""KV cache compaction by Attention Matching (arXiv 2602.16284)."""
