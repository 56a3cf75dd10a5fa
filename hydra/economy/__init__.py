"""Barter credits now; the HYDRA token, staking and state channels next (issue 12)."""
