"""Reading and writing a bundle's files: the disk half of `Bundle.load` / `Bundle.save`.

Every path comes from `BundleLayout`. Reading takes only what serving uses (bundle.json,
the four Keras models, the tabular scaler and the optional members); the training records
(Word2Vec vectors, the vocabulary, leaves) are written but never required. A damaged file
(empty, truncated, garbage, another program's JSON) is a `BundleError` naming it and the fix
(`reading`, `read_json_object`, `check_keras_file`), never silently replaced; a missing
optional member means "this bundle has none" (bundles trained before it). `check_files`
checks them all without loading a model, for `fbmarket serve` before it listens.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from fbmarket.files import commit, dumps_json, stage
from fbmarket.fusion import late
from fbmarket.fusion import model as _fusion_model  # noqa: F401  (registers FusionModel for loading)
from fbmarket.fusion.dataset import TabularScaler
from fbmarket.fusion.neighbours import NeighbourVote, load_votes, save_votes
from fbmarket.layout import FORMAT_VERSION, BundleLayout
from fbmarket.price.knn import KNN_FILE
from fbmarket.price.model import FREE_FILE, PRICE_FILE, QUANTILE_FILES, PriceModel, PriceModelError
from fbmarket.price.text_price import CONFIG_FILE as TEXT_PRICE_CONFIG
from fbmarket.price.text_price import WEIGHTS_FILE as TEXT_PRICE_WEIGHTS
from fbmarket.search.duplicates import DuplicateRule
from fbmarket.text import branch as _text_branch  # noqa: F401  (registers the text layers)
from fbmarket.text.tfidf import TfidfClassifier
from fbmarket.text.word2vec import save_vectors

if TYPE_CHECKING:
    from fbmarket.bundle import Bundle

log = logging.getLogger(__name__)

# The models a typed search does not need (`Bundle.load(lazy=True)` defers them).
PARTS = ("text_model", "backbone", "image_head")
PRICE_FILES = (*QUANTILE_FILES, FREE_FILE, TEXT_PRICE_CONFIG, TEXT_PRICE_WEIGHTS, KNN_FILE, PRICE_FILE)


class BundleError(FileNotFoundError):
    """A folder that is not a complete, readable bundle; the message names the file that is
    missing, empty, cut short or another program's."""


def model_path(layout: BundleLayout, key: str) -> Path:
    """The file of one of the four Keras models ("fusion" or one of PARTS)."""
    return {
        "text_model": layout.text_model,
        "backbone": layout.backbone,
        "image_head": layout.image_head,
        "fusion": layout.fusion,
    }[key]


# ---------------------------------------------------------------------- reading
RETRAIN = "retrain the bundle with `fbmarket train` (or copy it again: a file may have been cut short)"
# bundle.json keys serving reads, with their type: a manifest without them is another program's
# (or a damaged one), refused when the bundle is opened rather than a KeyError at the first search.
MANIFEST_KEYS: dict[str, type | tuple[type, ...]] = {
    "version": (str, int),
    "classes": list,
    "embedding_dim": int,
    "feature_dim": int,
    "backbone_size": int,
    "image_size": int,
    "max_photos": int,
    "weights": dict,
}


@contextmanager
def reading(layout: BundleLayout, path: Path, hint: str = RETRAIN) -> Iterator[None]:
    """Turn any failure to read or parse one bundle file into a BundleError naming the file.

    Loaders report an empty, truncated or foreign file with many exception types (JSON, zip,
    HDF5, Keras, pydantic, KeyError...): whatever they raise, the person needs the file's
    name and that it is unusable, not a traceback from inside the loader."""
    name = layout.relative(path)
    try:
        yield
    except BundleError:
        raise
    except FileNotFoundError as error:
        raise BundleError(f"bundle {layout.root} is incomplete: missing {name}") from error
    except Exception as error:  # noqa: BLE001  (see the docstring: the file, not the loader, is at fault)
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        why = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        raise BundleError(
            f"bundle {layout.root}: {name} is damaged or not an fbmarket file ({why}); {hint}"
        ) from error


def read_json_object(layout: BundleLayout, path: Path, hint: str = RETRAIN) -> dict[str, Any]:
    """A bundle file that must hold one JSON object; BundleError naming it otherwise."""
    with reading(layout, path, hint):
        payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict):
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(path)} holds a JSON {type(payload).__name__}, "
            f"not the object fbmarket writes; {hint}"
        )
    return payload


def check_manifest(layout: BundleLayout, manifest: dict[str, Any]) -> None:
    """bundle.json's keys and types (MANIFEST_KEYS), and a format this version reads."""
    where = f"bundle {layout.root}: {layout.manifest.name}"
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise BundleError(
            f"{where} lacks {', '.join(repr(k) for k in missing)}: not an fbmarket bundle manifest "
            f"(another program's file, or a damaged one); {RETRAIN}"
        )
    wrong = [
        f"{key!r} should be {'/'.join(t.__name__ for t in (kinds if isinstance(kinds, tuple) else (kinds,)))}"
        for key, kinds in MANIFEST_KEYS.items()
        if not isinstance(manifest[key], kinds) or isinstance(manifest[key], bool)
    ]
    classes = manifest["classes"]
    if isinstance(classes, list) and not (classes and all(isinstance(c, str) for c in classes)):
        wrong.append("'classes' should be a non-empty list of category names")
    if wrong:
        raise BundleError(f"{where} is damaged: {'; '.join(wrong)}; {RETRAIN}")
    version = manifest.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise BundleError(
            f"{where} has format {version!r}; this fbmarket reads format {FORMAT_VERSION} and older: "
            "upgrade fbmarket or retrain the bundle"
        )


def read_manifest(layout: BundleLayout) -> dict[str, Any]:
    """bundle.json, checked (`check_manifest`), after checking that every file serving reads is there."""
    if not layout.manifest.is_file():
        raise BundleError(
            f"{layout.root} is not a model bundle: {layout.manifest.name} is missing (train one first)"
        )
    manifest = read_json_object(layout, layout.manifest)
    check_manifest(layout, manifest)
    required = [model_path(layout, key) for key in ("text_model", "backbone", "image_head", "fusion")]
    missing = [layout.relative(path) for path in (*required, layout.tabular) if not path.is_file()]
    if missing:
        raise BundleError(f"bundle {layout.root} is incomplete: missing {', '.join(missing)}")
    return manifest


def check_keras_file(layout: BundleLayout, path: Path, hint: str = RETRAIN, whole: bool = False) -> None:
    """A .keras file is a zip archive holding config.json; an empty, truncated or foreign file is
    a BundleError naming it (Keras itself says "File not found" for one that exists). `whole`
    also reads every member against its CRC (what `check_files` wants; loading the model reads
    them anyway)."""
    where = f"bundle {layout.root}: {layout.relative(path)}"
    if not path.is_file():
        raise BundleError(f"bundle {layout.root} is incomplete: missing {layout.relative(path)}")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{where} is not a .keras (zip) file: empty, truncated or corrupt; {hint}")
    with reading(layout, path, hint), zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise BundleError(f"{where} is a zip file but not a Keras model (no config.json); {hint}")
        bad = archive.testzip() if whole else None
    if bad is not None:
        raise BundleError(f"{where} is corrupt (member {bad}); {hint}")


def load_model(layout: BundleLayout, key: str) -> keras.Model:
    path = model_path(layout, key)
    check_keras_file(layout, path)
    with reading(layout, path):
        return keras.models.load_model(path, compile=False)


def read_tabular(layout: BundleLayout) -> TabularScaler:
    """The tabular scaler (model/tabular.json); BundleError naming the file when it is unusable."""
    with reading(layout, layout.tabular):
        return TabularScaler.from_json(read_json_object(layout, layout.tabular))


def read_leaves(layout: BundleLayout) -> list[str] | None:
    """The fusion model's leaf categories (None: a bundle without them)."""
    if not layout.leaves.is_file():
        return None
    payload = read_json_object(layout, layout.leaves)
    leaves = payload.get("leaves") or []
    if not isinstance(leaves, list):
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(layout.leaves)} is damaged ('leaves' is not a list)"
        )
    return [str(leaf) for leaf in leaves]


def check_files(layout: BundleLayout) -> dict[str, Any]:
    """What serving reads, checked without loading a model (a fraction of a second): bundle.json,
    every .keras archive whole (CRCs), the JSON and .npz members. `fbmarket serve` runs it
    before it listens, so a damaged bundle is one line at start-up rather than a server that
    never becomes ready. Returns the manifest."""
    manifest = read_manifest(layout)
    archives = [model_path(layout, key) for key in (*PARTS, "fusion")]
    archives += [layout.late_fusion] if layout.late_fusion.exists() else []
    for path in archives:
        check_keras_file(layout, path, whole=True)
    for npz in (layout.tfidf_weights, layout.neighbours):  # an .npz is a zip too (both are optional)
        if npz.exists():
            with reading(layout, npz), zipfile.ZipFile(npz) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile("a member fails its CRC check")
    read_tabular(layout)
    for path in (layout.leaves, layout.tfidf, layout.duplicates):
        if path.exists():
            read_json_object(layout, path)
    check_ranking_files(layout, whole=True)
    return manifest


def check_ranking_files(layout: BundleLayout, whole: bool = False) -> None:
    """The buyer profiles and rankers (ranking/): each JSON an object, the learned ranker a
    .keras archive (`whole`: every member against its CRC); BundleError naming the first that
    is not."""
    for path in sorted(layout.ranking_dir.glob("*.json")):
        read_json_object(layout, path)
    learned = layout.ranking_dir / "learned_ranker.keras"
    if learned.exists():
        check_keras_file(layout, learned, whole=whole)


def read_duplicate_rule(layout: BundleLayout) -> DuplicateRule | None:
    path = layout.duplicates
    if not path.exists():
        return None
    try:
        return DuplicateRule.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(path)} cannot be used ({error}); retrain the "
            f"bundle, or delete the file to use the duplicate rule of DuplicateSettings"
        ) from error


def read_tfidf(layout: BundleLayout, n_classes: int) -> TfidfClassifier | None:
    """The TF-IDF member when the bundle has one; BundleError naming the file when it is unusable."""
    if not layout.tfidf.exists():
        return None
    names = f"{layout.relative(layout.tfidf)}, {layout.relative(layout.tfidf_weights)}"
    try:
        tfidf = TfidfClassifier.load(layout.model_dir)
    except FileNotFoundError as error:
        missing = Path(error.filename).name if error.filename else layout.tfidf_weights.name
        raise BundleError(
            f"bundle {layout.root} is incomplete: missing {layout.relative(layout.model_dir / missing)}"
        ) from error
    except (OSError, ValueError) as error:
        raise BundleError(
            f"bundle {layout.root}: the TF-IDF member ({names}) cannot be used: {error}"
        ) from error
    if tfidf.n_classes != n_classes:
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(layout.tfidf)} is for {tfidf.n_classes} categories, "
            f"the bundle has {n_classes}"
        )
    return tfidf


def read_neighbours(layout: BundleLayout, n_classes: int) -> dict[str, NeighbourVote]:
    """The neighbour-vote members when the bundle has them (else empty); BundleError naming the
    file when it is unusable."""
    path = layout.neighbours
    if not path.exists():
        return {}
    try:
        votes = load_votes(path)
    except ValueError as error:
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(path)} cannot be used ({error}); retrain the bundle"
        ) from error
    wrong = [name for name, vote in votes.items() if vote.n_classes != n_classes]
    if wrong:
        raise BundleError(
            f"bundle {layout.root}: {layout.relative(path)} is for other categories than the bundle's {n_classes}"
        )
    return votes


def read_late_fusion(
    layout: BundleLayout, manifest: dict[str, Any], classes: Sequence[str]
) -> keras.Model | None:
    """The late-fusion head when the bundle has one, checked against the bundle's members and
    categories; BundleError naming the file when it is unusable (a corrupt head is never
    silently replaced by the network's own: delete the file to serve that)."""
    path = layout.late_fusion
    name = layout.relative(path)
    if not path.exists():
        if manifest.get("late_fusion"):
            log.warning(
                "bundle %s records a late-fusion head but %s is missing: 'fusion' is the fusion "
                "network's own category head",
                layout.root,
                name,
            )
        return None
    where = f"bundle {layout.root}: {name}"
    hint = f"retrain the bundle, or delete {name} to serve the fusion network's own category head"
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise BundleError(f"{where} is not a .keras (zip) file: truncated or corrupt; {hint}")
    try:
        model = keras.models.load_model(path, compile=False)
        layer = model.get_layer("pooling")
    except Exception as error:  # keras reports a damaged archive with many exception types
        raise BundleError(f"{where} cannot be loaded ({type(error).__name__}: {error}); {hint}") from error
    if not isinstance(layer, late.LogLinearPooling):
        raise BundleError(f"{where} is not a late-fusion pooling head; {hint}")
    unknown = [member for member in layer.members if member not in late.MEMBERS]
    if unknown:
        raise BundleError(
            f"{where} pools unknown members {unknown} (known: {', '.join(late.MEMBERS)}); {hint}"
        )
    if layer.n_classes != len(classes):
        raise BundleError(
            f"{where} is for {layer.n_classes} categories, the bundle has {len(classes)}; {hint}"
        )
    return model


def read_price_model(layout: BundleLayout) -> tuple[PriceModel | None, str | None]:
    """The price model when the bundle has one, else None and the reason.

    Optional on purpose: bundles trained before it serve search as before, and a damaged
    price model costs only price suggestions (which then say why), never the whole bundle.
    """
    if not layout.price.exists():
        return None, "this bundle has no price model; retrain with fbmarket train"
    try:
        return PriceModel.load(layout.model_dir), None
    except PriceModelError as error:
        log.warning("price model unusable: %s", error)
        return None, str(error)


# ---------------------------------------------------------------------- writing
def price_file_key(name: str) -> str:
    """bundle.json's name for a price model file: price, price_low ... price_free, price_text_json/npz."""
    if name == PRICE_FILE:
        return "price"
    return Path(name).stem if name.endswith(".txt") else name.replace(".", "_")


def write_bundle(bundle: Bundle, layout: BundleLayout) -> None:
    """Write every part of `bundle` under `layout`, bundle.json last (its presence means complete).

    Optional parts the bundle does not have are removed, so a folder trained into before
    never serves an older run's head, members, price model or rule; so are the old copies of
    the root classes (labels.json, categories.json): bundle.json holds them once.
    """
    source = bundle.layout
    layout.model_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    def record(key: str, path: Path) -> None:
        files[key] = layout.relative(path)

    for key in (*PARTS, "fusion"):
        model = bundle.fusion if key == "fusion" else bundle.part(key)
        model.save(model_path(layout, key))
        record(key, model_path(layout, key))
    if bundle.word2vec is not None:
        save_vectors(bundle.word2vec, layout.model_dir)
    else:
        _carry(source.word2vec, layout.word2vec)
    record("word2vec", layout.word2vec)
    if bundle.vocabulary is not None:
        bundle.vocabulary.save(layout.vocabulary)
    else:
        _carry(source.vocabulary, layout.vocabulary)
    record("vocabulary", layout.vocabulary)
    bundle.tabular.save(layout.tabular)
    record("tabular", layout.tabular)
    leaves = bundle.leaves
    if leaves is not None:
        layout.leaves.write_text(dumps_json({"leaves": leaves}, indent=2, ensure_ascii=False))
        record("leaves", layout.leaves)
    stale: list[Path] = [layout.legacy_labels, layout.legacy_categories]
    if bundle.late_fusion is not None:
        bundle.late_fusion.save(layout.late_fusion)
        record("late_fusion", layout.late_fusion)
    else:
        stale.append(layout.late_fusion)
    if bundle.tfidf is not None:
        bundle.tfidf.save(layout.model_dir)
        record("tfidf", layout.tfidf)
        record("tfidf_weights", layout.tfidf_weights)
    else:
        stale += [layout.tfidf, layout.tfidf_weights]
    if bundle.neighbours:
        commit(stage(layout.neighbours, lambda temp: save_votes(temp, bundle.neighbours)), layout.neighbours)
        record("neighbours", layout.neighbours)
    else:
        stale.append(layout.neighbours)
    if bundle.price_model is not None:
        for name in bundle.price_model.save(layout.model_dir):
            record(price_file_key(name), layout.model_dir / name)
    else:
        stale += [layout.model_dir / name for name in PRICE_FILES]
    if bundle.duplicate_rule is not None:
        bundle.duplicate_rule.save(layout.duplicates)
        record("duplicates", layout.duplicates)
    else:
        stale.append(layout.duplicates)
    for path in stale:
        path.unlink(missing_ok=True)
    if bundle.settings is not None:
        bundle.settings.save(layout.settings)
    else:
        _carry(source.settings, layout.settings)
    bundle.manifest["files"] = files  # in place: keeps the key where the manifest has it
    text = dumps_json(bundle.manifest, indent=2)
    commit(stage(layout.manifest, lambda temp: temp.write_text(text)), layout.manifest)


def _carry(source: Path, target: Path) -> None:
    """Copy a file a loaded bundle did not read into the folder it is saved to."""
    if source.resolve() != target.resolve() and source.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
