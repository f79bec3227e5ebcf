"""Buyers, the second-stage ranker and personalised results (the buyer simulator is in `fbmarket.synthetic`)."""
