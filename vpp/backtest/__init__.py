"""Backtests: the engine's own bidding loop replayed on real prices in simulated time."""
