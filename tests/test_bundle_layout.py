"""One owner of the bundle folder: `BundleLayout` names every file, `Bundle.save` / `Bundle.load`.

The layout's names must be the ones the components write (their own `save(directory)`),
a trained bundle holds each thing once, `Bundle.load` needs only what it reads, and a
bundle written before the layout (with its copies of the root classes) still loads.
"""

from __future__ import annotations

import json
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
