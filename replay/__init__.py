"""Replay: pixel storage with frames kept once, the rate limiter, snapshots and the sharded service."""
