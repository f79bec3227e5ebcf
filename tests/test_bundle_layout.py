"""One owner of the bundle folder: `BundleLayout` names every file, `Bundle.save` / `Bundle.load`.

The layout's names must be the ones the components write (their own `save(directory)`),
a trained bundle holds each thing once, `Bundle.load` needs only what it reads, and a
bundle written before the layout (with its copies of the root classes) still loads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fbmarket.config import Settings
from fbmarket.layout import BundleLayout


def test_the_layout_names_what_each_component_writes(tmp_path: Path) -> None:
    from fbmarket.data.store import CACHE_DIR_NAME
    from fbmarket.price.model import PRICE_FILE
    from fbmarket.search.duplicates import RULE_FILE
    from fbmarket.text.tfidf import VOCABULARY_FILE, WEIGHTS_FILE
    from fbmarket.text.word2vec import VECTORS_FILE, VOCAB_FILE

    layout = BundleLayout(tmp_path)
    assert layout.model_dir.parent == tmp_path
    assert layout.tfidf == layout.model_dir / VOCABULARY_FILE
    assert layout.tfidf_weights == layout.model_dir / WEIGHTS_FILE
    assert layout.price == layout.model_dir / PRICE_FILE
    assert layout.duplicates == layout.model_dir / RULE_FILE
    assert layout.word2vec == layout.model_dir / VECTORS_FILE
    assert layout.vocabulary == layout.model_dir / VOCAB_FILE
    assert layout.cache_dir.name == CACHE_DIR_NAME
    settings = Settings()
    settings.out_dir = tmp_path
    assert settings.db_url == f"sqlite:///{layout.database.resolve()}"
    assert (settings.cache_dir, settings.reports_dir) == (layout.cache_dir, layout.reports_dir)
    assert layout.relative(layout.fusion) == "model/fusion.keras"


def test_a_trained_bundle_stores_each_thing_once_and_loads_only_what_it_reads(
    api_bundle: Path, tmp_path: Path
) -> None:
    from fbmarket.bundle import Bundle

    layout = BundleLayout(api_bundle)
    manifest = json.loads(layout.manifest.read_text())
    for relative in manifest["files"].values():
        assert (api_bundle / relative).is_file(), relative
    # the root classes once: bundle.json, no copies beside it
    assert manifest["classes"] and "labels" not in manifest["files"]
    assert not layout.legacy_labels.exists() and not layout.legacy_categories.exists()
    for path in (layout.vector_index, layout.photo_index, layout.embeddings, layout.split, layout.settings):
        assert path.is_file(), path
    assert (layout.ranking_dir / "profiles.json").is_file()

    # training records and leaves are written, never required to serve
    bare = BundleLayout(
        shutil.copytree(api_bundle, tmp_path / "bare", ignore=shutil.ignore_patterns("cache"))
    )
    for path in (bare.word2vec, bare.vocabulary, bare.leaves):
        path.unlink()
    model = Bundle.load(bare.root, lazy=True)
    assert model.leaves is None and model.loaded_parts == ()
    assert model.encode_query("sofa").shape == (model.embedding_dim,)


def test_save_then_load_gives_the_same_bundle_and_old_copies_are_dropped(
    api_bundle: Path, tmp_path: Path
) -> None:
    """A bundle written before the layout (model/labels.json, categories.json: copies of the
    root classes) loads; saving it writes each part once and removes the old copies."""
    from fbmarket.bundle import Bundle

    old = BundleLayout(shutil.copytree(api_bundle, tmp_path / "old", ignore=shutil.ignore_patterns("cache")))
    manifest = json.loads(old.manifest.read_text())
    classes = {"classes": manifest["classes"]}
    old.legacy_labels.write_text(json.dumps(classes))
    old.legacy_categories.write_text(json.dumps(classes))
    manifest["files"]["labels"] = old.relative(old.legacy_labels)
    old.manifest.write_text(json.dumps(manifest, indent=2))

    loaded = Bundle.load(old.root)
    saved = loaded.save(tmp_path / "new")
    assert not saved.legacy_labels.exists() and not saved.legacy_categories.exists()
    again = Bundle.load(saved.root)
    written = json.loads(saved.manifest.read_text())
    assert "labels" not in written["files"]
    assert {k: v for k, v in written.items() if k != "files"} == {
        k: v for k, v in manifest.items() if k != "files"
    }
    for relative in written["files"].values():
        assert (saved.root / relative).is_file(), relative
    assert (
        again.duplicate_rule is not None and again.duplicate_rule.to_json() == loaded.duplicate_rule.to_json()
    )
    assert (again.price_model is None) == (loaded.price_model is None)
    assert again.leaves == loaded.leaves
    for text in ("leather sofa", "kids bike"):
        np.testing.assert_allclose(again.encode_query(text), loaded.encode_query(text), atol=1e-6)
        assert again.predict_category(text, top=2)[0][0] == loaded.predict_category(text, top=2)[0][0]


def test_saving_drops_optional_parts_the_bundle_no_longer_has(api_bundle: Path, tmp_path: Path) -> None:
    """A folder trained into before never serves an older run's rule, head or members."""
    from fbmarket.bundle import Bundle

    folder = BundleLayout(shutil.copytree(api_bundle, tmp_path / "b", ignore=shutil.ignore_patterns("cache")))
    model = Bundle.load(folder.root, lazy=True)
    model.duplicate_rule = None
    model.late_fusion, model.tfidf = None, None
    model.save()
    files = json.loads(folder.manifest.read_text())["files"]
    assert not {"duplicates", "late_fusion", "tfidf", "tfidf_weights"} & set(files)
    for path in (folder.duplicates, folder.late_fusion, folder.tfidf, folder.tfidf_weights):
        assert not path.exists(), path
    reloaded = Bundle.load(folder.root, lazy=True)
    assert reloaded.duplicate_rule is None and reloaded.model_info["category_model"] == "fusion network"


def test_a_folder_without_a_file_serving_reads_names_it(api_bundle: Path, tmp_path: Path) -> None:
    from fbmarket.bundle import Bundle, BundleError

    folder = BundleLayout(shutil.copytree(api_bundle, tmp_path / "b", ignore=shutil.ignore_patterns("cache")))
    folder.tabular.unlink()
    with pytest.raises(BundleError, match="model/tabular.json"):
        Bundle.load(folder.root, lazy=True)


# Every file a bundle is served from (bundle.json's "files" less the optional price model and
# the training records, plus settings and the ranking folder): each one damaged in turn.
SERVED_FILES = (
    "bundle.json",
    "settings.json",
    "model/fusion.keras",
    "model/text_model.keras",
    "model/image_backbone.keras",
    "model/image_head.keras",
    "model/late_fusion.keras",
    "model/tabular.json",
    "model/leaves.json",
    "model/tfidf.json",
    "model/tfidf.npz",
    "model/neighbours.npz",
    "model/duplicates.json",
    "ranking/profiles.json",
    "ranking/rule_ranker.json",
    "ranking/learned_ranker.json",
    "ranking/learned_ranker.keras",
    "ranking/ranking_report.json",
)
NOT_SERVED = ("word2vec", "vocabulary")  # training records: written, never read to serve
DAMAGE = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: b"\x00\x17 not what this file should hold \xff" * 4,
}


@pytest.fixture(scope="module")
def pristine(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained bundle without its caches and reports (what the damage tests copy)."""
    return shutil.copytree(
        api_bundle,
        tmp_path_factory.mktemp("pristine") / "b",
        ignore=shutil.ignore_patterns("cache", "sample_data", "reports", "checkpoints"),
    )


def test_the_damage_tests_cover_every_file_the_bundle_is_served_from(pristine: Path) -> None:
    files = json.loads((pristine / "bundle.json").read_text())["files"]
    served = {relative for key, relative in files.items() if not key.startswith(("price", *NOT_SERVED))}
    ranking = {p.relative_to(pristine).as_posix() for p in (pristine / "ranking").iterdir()}
    assert served | ranking | {"bundle.json", "settings.json"} == set(SERVED_FILES)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("relative", SERVED_FILES)
def test_a_damaged_file_is_named_and_serve_does_not_start(
    pristine: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    relative: str,
    damage: str,
) -> None:
    """Before: a JSONDecodeError or Keras's "File not found" for a file that is there (one line
    naming the exception, not the file), or for the lazily read models and leaves nothing
    until the first photo search, while `serve` listened and answered 503 for ever."""
    import uvicorn

    import fbmarket.cli as cli

    def listen(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("serve started listening on a damaged bundle")

    monkeypatch.setattr(uvicorn, "run", listen)
    bundle = shutil.copytree(pristine, tmp_path / "b")
    target = bundle / relative
    target.write_bytes(DAMAGE[damage](target.read_bytes()))
    assert cli.main(["serve", "--bundle", str(bundle)]) == 2  # refused before it listens
    err = capsys.readouterr().err
    assert relative in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fbmarket serve: error: bundle {bundle}")


@pytest.mark.parametrize(
    "relative",
    ["bundle.json", "settings.json", "model/fusion.keras", "model/tabular.json", "ranking/profiles.json"],
)
def test_search_names_a_damaged_file_in_one_line(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], relative: str
) -> None:
    import fbmarket.cli as cli

    bundle = shutil.copytree(pristine, tmp_path / "b")
    target = bundle / relative
    target.write_bytes(target.read_bytes()[:100])
    assert cli.main(["search", "--bundle", str(bundle), "sofa", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert relative in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("part", ["model/text_model.keras", "model/image_backbone.keras", "model/image_head.keras"])
def test_a_damaged_lazy_part_is_named_when_it_loads(pristine: Path, tmp_path: Path, part: str) -> None:
    """A typed search never reads these; loading them (a photo search, evaluate) names the file."""
    from fbmarket.bundle import Bundle, BundleError

    bundle = shutil.copytree(pristine, tmp_path / "b")
    (bundle / part).write_bytes(b"")
    with pytest.raises(BundleError, match=f"{part} is not a .keras"):
        Bundle.load(bundle)


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        ([1, 2], "bundle.json holds a JSON list, not the object fbmarket writes"),
        ({"name": "my-model", "version": "1.0"}, "bundle.json lacks 'classes', 'embedding_dim'"),
        ({"classes": "Home"}, "'classes' should be list"),
        ({"classes": []}, "'classes' should be a non-empty list of category names"),
        ({"embedding_dim": "64"}, "'embedding_dim' should be int"),
        ({"format": 99}, "bundle.json has format 99; this fbmarket reads format 1 and older"),
    ],
)
def test_a_foreign_or_damaged_manifest_is_named(pristine: Path, tmp_path: Path, manifest, says: str) -> None:
    """Before: a KeyError at the first use of a key (a JSON object from another program), or a
    bundle of a newer format read as if it were this one's."""
    from fbmarket.bundle import Bundle, BundleError

    bundle = BundleLayout(shutil.copytree(pristine, tmp_path / "b"))
    if isinstance(manifest, dict) and "name" not in manifest:
        manifest = json.loads(bundle.manifest.read_text()) | manifest
    bundle.manifest.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(says)):
        Bundle.load(bundle.root, lazy=True)


@pytest.mark.parametrize(
    "relative", ["embeddings.npy", "embedding_ids.json", "index/vectors.faiss", "index/photos.faiss"]
)
def test_damaged_index_files_are_rebuilt_from_the_database(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], relative: str
) -> None:
    """The database is the state: the index files are a cache of it, rebuilt when unreadable."""
    import fbmarket.cli as cli

    bundle = shutil.copytree(pristine, tmp_path / "b")
    (bundle / relative).write_bytes(b"garbage")
    assert cli.main(["search", "--bundle", str(bundle), "sofa", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
