"""Synthetic data: the embedded marketplace generator and the buyer simulator.

Nothing here is used to serve: `marketplace.write_sample` writes the default dataset that
`python main.py` runs on offline (in the Gumtree input format), and `buyers` simulates the
buyers and sessions that ranking is trained and evaluated on when a dataset brings no real
`Users.csv` / `Interactions.csv`. The package sits just above `fbmarket.data` (it writes and
reads its tables) and below the pipeline and workflow that call it.
"""
