"""The economy: barter credits from receipts paid along the route, the HYDRA token (a log
co-signed by a federation of signposts, replicated by every node), wallets and payment channels."""
