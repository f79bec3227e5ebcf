"""Buyers, the interaction simulator and the second-stage ranker."""
