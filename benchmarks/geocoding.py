"""Geocoding match rates on the real Gumtree dev locations (the aim: >= 95% matched).

Usage: .venv/bin/python benchmarks/geocoding.py [--data DIR] [--top N] [--out FILE]
Skips with a message (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd
from harness import DEV_DATA, REPO, RESULTS, write_json

from fbmarket.data import schema as S
from fbmarket.data.geo import Gazetteer

DEFAULT_DATA = DEV_DATA
DEFAULT_OUT = RESULTS / "geocoding.json"


def read_locations(data_dir: Path) -> pd.Series:
    """The raw `location` column (bare '\\r' inside descriptions: lineterminator must be '\\n')."""
    products = pd.read_csv(data_dir / "Products.csv", index_col=0, lineterminator="\n")
    return products["location"]


def rates(frame: pd.DataFrame) -> dict[str, float]:
    return {k: round(v, 4) for k, v in Gazetteer.match_rate(frame).items()}


def run(data_dir: Path, top: int) -> dict | None:
    if not (data_dir / "Products.csv").exists():
        print(f"SKIP: no Products.csv under {data_dir} (pass --data DIR)")
        return None
    locations = read_locations(data_dir)
    start = time.perf_counter()
    gazetteer = Gazetteer.load()
    loaded = time.perf_counter()
    geo = gazetteer.geocode(locations, details=True)
    done = time.perf_counter()

    distinct = geo.assign(location=locations.to_numpy()).drop_duplicates("location")
    top_unmatched = locations[(geo[S.GEO_MATCH] != "town").to_numpy()].value_counts().head(top)
    unknown = locations[(geo[S.GEO_MATCH] == "unknown").to_numpy()].value_counts()
    result = {
        "data": os.path.relpath(data_dir, REPO),
        "products": int(len(geo)),
        "distinct_locations": int(len(distinct)),
        "by_product": rates(geo),
        "by_distinct_location": rates(distinct),
        "source_by_product": {k: int(v) for k, v in geo["geo_source"].fillna("none").value_counts().items()},
        "source_by_distinct_location": {
            k: int(v) for k, v in distinct["geo_source"].fillna("none").value_counts().items()
        },
        "top_not_town_level": {str(k): int(v) for k, v in top_unmatched.items()},
        "unknown": {str(k): int(v) for k, v in unknown.items()},
        "seconds": {"load": round(loaded - start, 3), "geocode": round(done - loaded, 3)},
        "places_in_gazetteer": int(len(gazetteer.places)),
        "regions": int(len(gazetteer.regions)),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with Products.csv")
    parser.add_argument("--top", type=int, default=25, help="how many unmatched strings to list")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    result = run(args.data, args.top)
    if result is None:
        return 0
    for label in ("by_product", "by_distinct_location"):
        r = result[label]
        print(
            f"{label:22s} matched {r['matched']:.1%}  (town {r['town']:.1%}, county {r['county']:.1%}, "
            f"unknown {r['unknown']:.1%})"
        )
    print(f"products {result['products']}, distinct locations {result['distinct_locations']}")
    print(f"how matched (distinct locations): {result['source_by_distinct_location']}")
    print(f"time: load {result['seconds']['load']} s, geocode {result['seconds']['geocode']} s")
    print(f"top {args.top} locations not matched at town level (products):")
    for location, count in result["top_not_town_level"].items():
        print(f"  {count:4d}  {location}")
    if result["unknown"]:
        print(f"unknown: {result['unknown']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
