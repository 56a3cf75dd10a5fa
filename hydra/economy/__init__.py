"""The economy: barter credits from receipts paid along the route (the HYDRA token, staking
and state channels are still to come)."""
