"""Shard ownership: leases with epochs, worker membership, fair-share rebalancing."""
