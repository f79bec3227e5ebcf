"""A tiny trained bundle end to end: training, save/load, serving calls, evaluation CLI, notebook.

One small bundle is trained once for this module (a synthetic marketplace of ~100
listings, a few epochs, an untrained 32px backbone) so the whole file runs in about
a minute on a shared 2-core machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fbmarket.bundle import Bundle, BundleError
from fbmarket.cli import main as cli
from fbmarket.config import Settings
from fbmarket.data import schema as S

ROOT = Path(__file__).resolve().parents[1]


def tiny_settings(data_dir: Path, out_dir: Path) -> Settings:
    settings = Settings()
    settings.auto_plan = False  # exactly these settings, whatever the data's size
    settings.data_dir, settings.out_dir = data_dir, out_dir
    settings.data.image_size = 48
    t = settings.text
    t.w2v_dim, t.w2v_epochs, t.max_tokens, t.max_title_tokens = 16, 3, 24, 8
    t.conv_filters, t.text_dim, t.wide_max_tokens, t.frozen_epochs, t.finetune_epochs = 16, 32, 2000, 3, 1
    v = settings.vision
    v.backbone, v.train_size, v.epochs, v.head_epochs = "resnet50v2", 32, 0, 5  # untrained: speed, not skill
    f = settings.fusion
    f.embedding_dim, f.hidden_dim, f.epochs, f.batch_size = 16, 32, 2, 32
    f.log_dir = str(out_dir / "logs")
    return settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    from fbmarket.prepare import prepare_data
    from fbmarket.synthetic.marketplace import write_sample
    from fbmarket.training import train_bundle

    root = tmp_path_factory.mktemp("model")
    write_sample(root / "data", n_products=110, seed=3, show_progress=False)
    settings = tiny_settings(root / "data", root / "bundle")
    prepared = prepare_data(settings, show_progress=False, store=False)
    result = train_bundle(prepared, settings, settings.out_dir, show_progress=False)
    return result, prepared, settings


def test_training_writes_a_complete_bundle_with_reports_and_logs(trained) -> None:
    result, prepared, settings = trained
    bundle = result.bundle_dir
    manifest = json.loads((bundle / "bundle.json").read_text())
    for relative in manifest["files"].values():
        assert (bundle / relative).is_file(), relative
    assert not list(bundle.rglob("*.pkl")) and not list(bundle.rglob("*.pickle"))
    assert manifest["classes"] == prepared.encoder.classes
    assert "untrained" in manifest["weights"]["description"]  # every report says which weights
    for branch in ("text", "image", "fusion"):
        assert 0.0 <= result.summary[branch]["accuracy"] <= 1.0
        assert Path(result.metrics["branches"][branch]["confusion_png"]).stat().st_size > 5000
    assert result.summary["image_weights"] == manifest["weights"]["description"]
    events = list(result.log_dir.rglob("events.out.tfevents.*"))
    assert {p.relative_to(result.log_dir).parts[0] for p in events} >= {"text", "fusion", "hparams"}
    assert (bundle / "checkpoints" / "fusion.weights.h5").is_file()
    history = result.history["fusion"]
    assert "learning_rate" in history and "val_contrastive_loss" in history


def test_fusion_is_the_late_fusion_of_its_members(trained) -> None:
    """ "fusion" pools the network, text, image, TF-IDF and neighbour-vote members with weights
    fit on val; the served neighbour votes read the train + val listings."""
    result, prepared, _ = trained
    manifest = json.loads((result.bundle_dir / "bundle.json").read_text())
    weights = manifest["late_fusion"]["members"]
    names = ("fusion_network", "text", "image", "tfidf", "text_neighbours", "photo_neighbours")
    assert set(weights) == set(names)
    assert all(w >= 0 for w in weights.values()) and sum(weights.values()) > 0
    assert manifest["late_fusion"]["fit_on"] == {"split": "val", "listings": len(prepared.part("val"))}
    assert manifest["late_fusion"]["refit_on_train_val"][:2] == ["tfidf", "neighbour votes (references)"]
    assert (result.bundle_dir / "model" / "late_fusion.keras").is_file()
    model = Bundle.load(result.bundle_dir)
    references = model.neighbours["text_neighbours"]
    assert len(references.labels) == len(prepared.part("train")) + len(prepared.part("val"))
    assert references.k == 20 and references.dim == model.tfidf.features(["a"], ["a"]).shape[1]
    products = prepared.part("test").head(20)
    predictions = model.predict_products(products, prepared.images)
    probs = predictions.probabilities
    assert set(probs) == {"text", "image", "fusion", *names}
    members = {name: probs[name] for name in names}
    has_photo = np.array([bool(rows) for rows in predictions.photo_rows], np.float32)
    np.testing.assert_allclose(model.pool(members, has_photo), probs["fusion"], atol=1e-5)
    np.testing.assert_allclose(probs["fusion"].sum(1), 1.0, atol=1e-5)
    for branch in ("fusion_network", "tfidf"):
        assert branch in result.metrics["branches"]


def test_a_bundle_without_the_late_fusion_head_serves_the_network(trained, tmp_path: Path) -> None:
    """Bundles from before the late fusion (or trained with it off) still load and predict."""
    result, prepared, _ = trained
    older = shutil.copytree(result.bundle_dir, tmp_path / "older-bundle")
    for name in ("late_fusion.keras", "tfidf.json", "tfidf.npz", "neighbours.npz"):
        (older / "model" / name).unlink()
    products = prepared.part("test").head(8)
    current = Bundle.load(result.bundle_dir).predict_products(products, prepared.images).probabilities
    model = Bundle.load(older)
    probs = model.predict_products(products, prepared.images).probabilities
    assert set(probs) == {"text", "image", "fusion"}
    np.testing.assert_allclose(probs["fusion"], current["fusion_network"], atol=1e-6)
    assert model.model_info["category_model"] == "fusion network"
    assert model.predict_category("mountain bike", None, top=1)[0][0] in model.classes
    (older / "model" / "late_fusion.keras").write_bytes(
        (result.bundle_dir / "model" / "late_fusion.keras").read_bytes()
    )
    with pytest.raises(BundleError, match="tfidf.json"):
        Bundle.load(older)
    for name in ("tfidf.json", "tfidf.npz"):
        shutil.copy(result.bundle_dir / "model" / name, older / "model" / name)
    with pytest.raises(BundleError, match="pools text_neighbours, photo_neighbours and model/neighbours.npz"):
        Bundle.load(older)


def test_bundle_loads_elsewhere_and_predicts_identically(trained, tmp_path: Path) -> None:
    result, prepared, _ = trained
    moved = shutil.copytree(result.bundle_dir, tmp_path / "copied-bundle")  # another machine
    shutil.rmtree(moved / "cache")  # nothing cached: features are recomputed from photos
    products = prepared.part("test").head(12)
    first = Bundle.load(result.bundle_dir).predict_products(products, prepared.images)
    again = Bundle.load(moved).predict_products(products, prepared.images)
    for branch in ("text", "image", "fusion"):
        np.testing.assert_allclose(
            again.probabilities[branch], first.probabilities[branch], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(again.embeddings, first.embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1.0, rtol=1e-5)


def test_serving_calls_text_photo_both_and_bad_input(trained) -> None:
    result, prepared, _ = trained
    model = Bundle.load(result.bundle_dir)
    photo = Image.open(prepared.images[S.IMAGE_PATH].iloc[0])
    for text, image in (("leather sofa", None), (None, photo), ("leather sofa", photo)):
        vector = model.encode_query(text, image)
        assert vector.shape == (model.embedding_dim,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, rel=1e-5)
    grey = Image.new("L", (30, 90), 128)  # odd size and mode: cleaned like training photos
    ranked = model.predict_category("mountain bike", grey, top=3)
    assert len(ranked) == 3 and all(name in model.classes for name, _ in ranked)
    assert ranked[0][1] >= ranked[1][1] >= ranked[2][1]
    with pytest.raises(ValueError, match="words"):
        model.encode_query("😀😀", None)  # an all-emoji query has no words
    with pytest.raises(ValueError):
        model.predict_category("", None)
    vectors = model.encode_products(prepared.products.head(3), prepared.images.iloc[:0])  # no photos
    assert vectors.shape == (3, model.embedding_dim)


def test_loading_a_folder_that_is_not_a_bundle_names_what_is_missing(trained, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle.json"):
        Bundle.load(tmp_path)
    broken = shutil.copytree(
        trained[0].bundle_dir, tmp_path / "broken", ignore=shutil.ignore_patterns("cache")
    )
    (broken / "model" / "fusion.keras").unlink()
    with pytest.raises(BundleError, match="fusion.keras"):
        Bundle.load(broken)


def test_macro_f1_averages_over_the_categories_that_occur() -> None:
    """A small evaluation folder (one listing, or a few categories) is not scored as if every
    category it lacks had F1 0."""
    from fbmarket.evaluate import classification_metrics

    classes = [f"c{i}" for i in range(13)]
    one = classification_metrics(np.array([4]), np.eye(13)[[4]], classes)
    assert one["accuracy"] == 1.0 and one["macro_f1"] == 1.0
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(13)[[0, 1, 1, 1]]  # one class-0 listing taken for class 1
    metrics = classification_metrics(labels, probs, classes)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert len(metrics["per_class"]) == 13 and np.shape(metrics["confusion_matrix"]) == (13, 13)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _head_for_five_categories(path: Path) -> None:
    from fbmarket.fusion.late import MEMBERS, build_late_fusion

    build_late_fusion(MEMBERS, 5).save(path)


def _tfidf_for_more_categories(path: Path) -> None:
    config = json.loads(path.read_text())
    config["n_classes"] += 7
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("name", "damage", "says"),
    [
        ("late_fusion.keras", _truncate, "late_fusion.keras is not a .keras"),
        ("late_fusion.keras", _head_for_five_categories, "late_fusion.keras is for 5 categories"),
        ("tfidf.npz", _truncate, "tfidf.npz: not a readable"),
        ("tfidf.json", _truncate, "tfidf.json: not a readable"),
        ("tfidf.json", _tfidf_for_more_categories, "tfidf.json is for"),
    ],
)
def test_a_damaged_late_fusion_member_fails_loading_and_names_the_file(
    trained, tmp_path: Path, capsys, name: str, damage, says: str
) -> None:
    """Not a raw BadZipFile / JSONDecodeError traceback, nor a bundle that loads and then fails
    every prediction (the API answered those with 422 or 500)."""
    broken = shutil.copytree(
        trained[0].bundle_dir, tmp_path / "broken", ignore=shutil.ignore_patterns("cache")
    )
    damage(broken / "model" / name)
    with pytest.raises(BundleError, match=says):
        Bundle.load(broken, lazy=True)
    folder = _dataset(tmp_path, seed=13)
    report = tmp_path / "r.json"
    code = cli(
        ["evaluate", "--bundle", str(broken), "--data", str(folder), "--report", str(report), "--quiet"]
    )
    assert code == 2
    assert says in capsys.readouterr().err
    assert not report.exists()


def _dataset(tmp_path: Path, seed: int = 11) -> Path:
    from fbmarket.synthetic.marketplace import write_sample

    folder = tmp_path / "other"
    write_sample(folder, n_products=40, seed=seed, show_progress=False)
    return folder


def evaluate_cli(trained, folder: Path, report: Path) -> int:
    """`fbmarket evaluate` of the session's tiny bundle on `folder`; the exit code."""
    bundle = str(trained[0].bundle_dir)
    return cli(["evaluate", "--bundle", bundle, "--data", str(folder), "--report", str(report), "--quiet"])


def test_evaluate_cli_scores_another_folder_and_reports_unseen_categories(
    trained, tmp_path: Path, capsys
) -> None:
    folder = _dataset(tmp_path)
    products = pd.read_csv(folder / "Products.csv", index_col=0, lineterminator="\n", dtype=str)
    products.loc[products.index[:3], "category"] = "Vehicles / Cars / Vans"  # a root the model never saw
    products.loc[products.index[3], "product_description"] = "😀😀😀"
    products.to_csv(folder / "Products.csv")
    first_photo = next((folder / "images").glob("*.jpg"))
    first_photo.write_bytes(b"not a jpeg")  # a photo that fails to decode
    report = tmp_path / "report.json"
    code = evaluate_cli(trained, folder, report)
    assert code == 0
    result = json.loads(report.read_text())
    for key in (
        "accuracy",
        "macro_f1",
        "n_products",
        "weights",
        "branches",
        "text_accuracy",
        "image_accuracy",
    ):
        assert key in result
    assert result["unseen_categories"] == {"Vehicles": 3}
    assert result["seen_in_training"] == {}  # another folder: no listing the bundle trained on
    assert result["n_products"] == result["n_listings_given"] - 3
    assert result["products_without_photo"] > 0
    assert Path(result["files"]["predictions_csv"]).is_file()
    out = capsys.readouterr().out
    assert "Vehicles" in out and "not scored" in out


def test_evaluate_cli_warns_when_scoring_listings_the_bundle_trained_on(trained, tmp_path, capsys) -> None:
    """Before: the training folder scored silently (0.97 on the dev data, against 0.84 on its
    test split), as if the model had never seen it."""
    result, prepared, settings = trained
    report = tmp_path / "own.json"
    assert evaluate_cli(trained, settings.data_dir, report) == 0
    seen = json.loads(report.read_text())["seen_in_training"]
    split = prepared.products[S.SPLIT].value_counts()
    assert seen == {"train": int(split["train"]), "val": int(split["val"])}
    out = capsys.readouterr().out
    assert f"note: {seen['train'] + seen['val']} of these listings are in this bundle's training split" in out


def test_evaluate_cli_names_the_missing_column(trained, tmp_path: Path, capsys) -> None:
    folder = _dataset(tmp_path, seed=12)
    products = pd.read_csv(folder / "Products.csv", index_col=0, lineterminator="\n", dtype=str)
    products.drop(columns=["category"]).to_csv(folder / "Products.csv")
    code = evaluate_cli(trained, folder, tmp_path / "r.json")
    assert code == 2
    assert "category" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_review_notebook_executes_on_the_bundle(trained, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FBMARKET_BUNDLE", str(trained[0].bundle_dir))
    notebook = nbformat.read(ROOT / "notebooks" / "review.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "image weights:" in text and "embedding norms" in text
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 3
