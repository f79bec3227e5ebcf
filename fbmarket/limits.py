"""How many results a caller may ask for, checked by one function.

Two limits, both named here or in the settings so that no module keeps its own copy:

* `MAX_RESULTS` (100) is what one request may ask for: the HTTP API's `k` parameter, the
  CLI's `-k` and `Marketplace` (search, recommendations, similar listings, price evidence);
* `SearchSettings.max_k` (1000 by default) bounds the internal pools that retrieval and
  the indexes hand on (the ranker's candidates are 200 by default), where a larger `k`
  is a caller's bug rather than a client's request.

`check_k` takes the limit and the error to raise: the service raises its client-facing
error (a 422), the search internals a plain `ValueError` (a bug in the caller).
"""

from __future__ import annotations

import numpy as np

MAX_RESULTS = 100
# The largest price a client may name in a filter or a listing form (GBP): a bound on typing
# mistakes, far above any second-hand listing (the cleaning step's own cap is data.max_price).
MAX_PRICE_GBP = 1e7
MAX_DISTANCE_KM = 2000.0  # a search's distance limit: the length of Great Britain, and then some
MIN_SAMPLE_PRODUCTS = 40  # the synthetic marketplace's smallest size: one row of every kind of dirt


def check_k(k: object, max_k: int = MAX_RESULTS, error: type[Exception] = ValueError) -> int:
    """`k` as an int when it is a whole number from 1 to `max_k`; else `error` saying what is allowed."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise error(f"k must be a whole number from 1 to {max_k}, got {k!r}")
    if not 1 <= int(k) <= max_k:
        raise error(f"k must be between 1 and {max_k}, got {k}")
    return int(k)
