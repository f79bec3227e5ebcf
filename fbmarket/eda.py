"""Exploratory plots of the clean listings: what the data looks like before any model sees it.

Five PNGs (category counts, prices, a map, a title word cloud, photo sizes) drawn with
matplotlib's object API on the Agg canvas, so nothing touches pyplot's global state or
needs a display. Every plot copes with empty input by saying so instead of failing, and
says "(synthetic data)" in its title when the listings come from the embedded generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from fbmarket.data import schema as S

PLOT_NAMES = ("category_counts", "price_distribution", "listing_map", "wordcloud", "photo_sizes")
UK_EXTENT = ((-10.8, 2.4), (49.8, 60.95))  # lon, lat: Great Britain and Northern Ireland with a margin
DPI = 100
TITLE_STOPWORDS = {
    "gumtree",
    "x",
    "s",
    "new",
    "brand",
    "used",
    "size",
}  # boilerplate that would fill the cloud


def _titled(text: str, synthetic: bool) -> str:
    return f"{text} (synthetic data)" if synthetic else text


def _say(ax: Axes, message: str) -> None:
    """An empty panel that explains itself, instead of a crash or a blank square."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def plot_category_counts(products: pd.DataFrame, path: Path, synthetic: bool) -> Path:
    """Listings per root category, largest at the top."""
    counts = products[S.ROOT_CATEGORY].dropna().astype(str).value_counts().sort_values()
    figure = _new_figure(8, max(3.0, 0.38 * len(counts) + 1.4))
    ax = figure.add_subplot()
    if counts.empty:
        _say(ax, "no listings")
    else:
        bars = ax.barh(counts.index, counts.to_numpy(), color="#4C72B0")
        ax.bar_label(bars, padding=3, fontsize=8)
        ax.set_xlabel("listings")
        ax.margins(x=0.1)
        leaves = products[S.LEAF_CATEGORY].nunique() if S.LEAF_CATEGORY in products else None
        detail = f"{len(products):,} listings, {len(counts)} roots" + (f", {leaves} leaves" if leaves else "")
        ax.set_title(detail, fontsize=9, color="0.35")
    figure.suptitle(_titled("Listings per root category", synthetic))
    return _save(figure, path)


def plot_price_distribution(products: pd.DataFrame, path: Path, synthetic: bool) -> Path:
    """Log-scale price histogram and per-root box plots: prices span five orders of magnitude."""
    prices = products[[S.ROOT_CATEGORY, S.PRICE]].dropna()
    positive = prices[prices[S.PRICE] > 0]
    free = int((prices[S.PRICE] == 0).sum())
    n_roots = positive[S.ROOT_CATEGORY].nunique()
    figure = _new_figure(13, max(4.5, 0.36 * n_roots + 1.6))
    hist_ax, box_ax = figure.subplots(1, 2, width_ratios=(1, 1.25))
    if positive.empty:
        _say(hist_ax, "no listing with a positive price")
        _say(box_ax, "no listing with a positive price")
    else:
        values = positive[S.PRICE].to_numpy(dtype=float)
        low, high = values.min(), values.max()
        bins = np.logspace(np.log10(low), np.log10(high * 1.001 if high > low else low * 10), 40)
        hist_ax.hist(values, bins=bins, color="#55A868", edgecolor="white", linewidth=0.4)
        hist_ax.set_xscale("log")
        median = float(np.median(prices[S.PRICE]))
        hist_ax.axvline(max(median, low), color="0.2", linestyle="--", linewidth=1)
        hist_ax.set_xlabel("price (£, log scale)")
        hist_ax.set_ylabel("listings")
        hist_ax.set_title(
            f"{len(prices):,} priced listings; median £{median:,.0f}; {free:,} free (£0) not shown",
            fontsize=9,
        )
        order = positive.groupby(S.ROOT_CATEGORY)[S.PRICE].median().sort_values().index
        groups = [positive.loc[positive[S.ROOT_CATEGORY] == root, S.PRICE].to_numpy() for root in order]
        box_ax.boxplot(
            groups,
            orientation="horizontal",
            tick_labels=list(order),
            flierprops={"markersize": 2, "alpha": 0.4},
            medianprops={"color": "#C44E52"},
        )
        box_ax.set_xscale("log")
        box_ax.set_xlabel("price (£, log scale)")
        box_ax.set_title("per root category, sorted by median", fontsize=9)
        box_ax.tick_params(axis="y", labelsize=8)
    figure.suptitle(_titled("Price distribution", synthetic))
    return _save(figure, path)


def plot_listing_map(products: pd.DataFrame, path: Path, synthetic: bool) -> Path:
    """Listings per geocoded place over the UK outline; unknown places are counted, not guessed."""
    import geopandas as gpd

    from fbmarket.data.geo import uk_outline

    located = products[[S.LATITUDE, S.LONGITUDE]].apply(pd.to_numeric, errors="coerce").dropna()
    unknown = len(products) - len(located)
    places = located.groupby([S.LATITUDE, S.LONGITUDE]).size().rename("listings").reset_index()
    places = places.sort_values("listings", ascending=False, kind="stable")  # big circles under small ones
    figure = _new_figure(7, 8.2)
    ax = figure.add_subplot()
    outline = uk_outline()
    outline.plot(ax=ax, color="#EFEFEF", edgecolor="0.55", linewidth=0.6)
    if places.empty:
        _say(ax, "no listing has a known location")
    else:
        points = gpd.GeoDataFrame(
            places, geometry=gpd.points_from_xy(places[S.LONGITUDE], places[S.LATITUDE]), crs="EPSG:4326"
        )
        most = int(points["listings"].max())
        points.plot(
            ax=ax,
            column="listings",
            cmap="plasma",
            norm=LogNorm(vmin=1, vmax=max(most, 2)),
            markersize=6 + 14 * np.sqrt(points["listings"].to_numpy()),
            alpha=0.75,
            edgecolor="white",
            linewidth=0.3,
            legend=True,
            legend_kwds={"label": "listings at this place", "shrink": 0.55},
        )
    ax.set_xlim(*UK_EXTENT[0])
    ax.set_ylim(*UK_EXTENT[1])
    ax.set_aspect(1 / np.cos(np.radians(55)))  # plate carrée stretched to look right at UK latitudes
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel("")
    ax.set_xlabel(
        f"{len(located):,} listings at {len(places):,} places; "
        f"{unknown:,} with an unknown location not shown",
        fontsize=9,
    )
    figure.suptitle(_titled("Where the listings are", synthetic))
    return _save(figure, path)


def plot_wordcloud(products: pd.DataFrame, path: Path, synthetic: bool, seed: int) -> Path:
    """The words sellers put in titles; stop words and marketplace boilerplate removed."""
    from wordcloud import STOPWORDS, WordCloud

    text = " ".join(products[S.TITLE].dropna().astype(str))
    figure = _new_figure(8, 4.4)
    ax = figure.add_subplot()
    cloud = WordCloud(
        width=760,
        height=380,
        background_color="white",
        stopwords=STOPWORDS | TITLE_STOPWORDS,
        collocations=False,
        max_words=150,
        random_state=seed,
        prefer_horizontal=0.9,
    )
    try:
        ax.imshow(cloud.generate(text).to_array(), interpolation="bilinear")
        ax.set_axis_off()
    except ValueError:  # wordcloud refuses text without a single usable word
        _say(ax, "no title words to draw")
    figure.suptitle(_titled(f"Words in {len(products):,} listing titles", synthetic))
    return _save(figure, path)


def plot_photo_sizes(products: pd.DataFrame, images: pd.DataFrame, path: Path, synthetic: bool) -> Path:
    """Original photo sizes, aspect ratios and photos per listing: what the image cleaning had to absorb."""
    figure = _new_figure(14, 4.6)
    size_ax, aspect_ax, count_ax = figure.subplots(1, 3)
    has_sizes = not images.empty and {S.WIDTH, S.HEIGHT}.issubset(images.columns)
    sizes = images[[S.WIDTH, S.HEIGHT]].dropna() if has_sizes else pd.DataFrame()
    if sizes.empty:
        _say(size_ax, "no photos")
        _say(aspect_ax, "no photos")
    else:
        pairs = sizes.groupby([S.WIDTH, S.HEIGHT]).size().rename("photos").reset_index()
        size_ax.scatter(
            pairs[S.WIDTH],
            pairs[S.HEIGHT],
            s=2 + 100 * pairs["photos"] / pairs["photos"].max(),  # area proportional to photos
            alpha=0.45,
            color="#8172B2",
            edgecolor="white",
            linewidth=0.4,
        )
        top = pairs.sort_values("photos", ascending=False, kind="stable").iloc[0]
        size_ax.set_title(
            f"{len(sizes):,} photos, {len(pairs):,} distinct size{'' if len(pairs) == 1 else 's'}; "
            f"most common {int(top[S.WIDTH])}x{int(top[S.HEIGHT])} ({int(top['photos']):,})",
            fontsize=9,
        )
        size_ax.set_xlabel("original width (px)")
        size_ax.set_ylabel("original height (px)")
        size_ax.margins(0.15)

        aspect = (
            images[S.ASPECT] if S.ASPECT in images.columns else images[S.WIDTH] / images[S.HEIGHT]
        ).astype(float)
        aspect = aspect[np.isfinite(aspect) & (aspect > 0)].clip(0.25, 4.0)
        aspect_ax.hist(aspect, bins=np.logspace(np.log10(0.25), np.log10(4.0), 33), color="#CCB974")
        aspect_ax.set_xscale("log")
        aspect_ax.set_xticks([0.25, 0.5, 1, 2, 4], labels=["1:4", "1:2", "1:1", "2:1", "4:1"])
        aspect_ax.set_xticks([], minor=True)
        aspect_ax.set_xlabel("aspect ratio, width:height (clipped to 1:4 .. 4:1)")
        aspect_ax.set_ylabel("photos")
        modes = images[S.ORIGINAL_MODE].value_counts() if S.ORIGINAL_MODE in images.columns else pd.Series()
        mode_text = ", ".join(f"{mode} {count:,}" for mode, count in modes.head(5).items())
        aspect_ax.set_title(f"original modes: {mode_text}" if mode_text else "aspect ratio", fontsize=9)

    if products.empty:
        _say(count_ax, "no listings")
    else:
        per_product = images.groupby(S.PRODUCT_ID).size() if not images.empty else pd.Series(dtype=int)
        counts = products[S.PRODUCT_ID].map(per_product).fillna(0).astype(int)
        histogram = counts.value_counts().sort_index()
        bars = count_ax.bar(histogram.index.astype(str), histogram.to_numpy(), color="#64B5CD")
        count_ax.bar_label(bars, padding=2, fontsize=8)
        count_ax.set_xlabel("photos per listing")
        count_ax.set_ylabel("listings")
        count_ax.margins(y=0.12)
        count_ax.set_title(
            f"{int((counts == 0).sum()):,} of {len(counts):,} listings without a photo", fontsize=9
        )
    figure.suptitle(_titled("Photos", synthetic))
    return _save(figure, path)


def make_eda_plots(
    products: pd.DataFrame, images: pd.DataFrame, out_dir: Path, synthetic: bool, seed: int = 0
) -> dict[str, Path]:
    """Write the five EDA PNGs into `out_dir`; returns plot name -> file path."""
    S.require_columns(
        products, (S.PRODUCT_ID, S.TITLE, S.ROOT_CATEGORY, S.PRICE, S.LATITUDE, S.LONGITUDE), "products"
    )
    if not images.empty:
        S.require_columns(images, (S.PRODUCT_ID, S.WIDTH, S.HEIGHT), "images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "category_counts": plot_category_counts(products, out_dir / "category_counts.png", synthetic),
        "price_distribution": plot_price_distribution(
            products, out_dir / "price_distribution.png", synthetic
        ),
        "listing_map": plot_listing_map(products, out_dir / "listing_map.png", synthetic),
        "wordcloud": plot_wordcloud(products, out_dir / "wordcloud.png", synthetic, seed),
        "photo_sizes": plot_photo_sizes(products, images, out_dir / "photo_sizes.png", synthetic),
    }
