"""Checking what stages compute: commitments, tolerant comparison, reputation."""
