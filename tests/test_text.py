"""Text branch: spaCy lemmas, Word2Vec + vocabulary on disk, the Keras text model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from fbmarket.config import TextSettings
from fbmarket.text.branch import (
    EMBEDDING_LAYER,
    build_text_classifier,
    build_text_encoder,
    build_text_models,
    set_embedding_trainable,
    string_batch,
)
from fbmarket.text.tokenize import get_tokenizer, join, tokenize_listings
from fbmarket.text.train import KeepBest, text_dataset, train_text_classifier
from fbmarket.text.word2vec import OOV, PAD, Vocabulary, load_vectors, save_vectors, train_word2vec

TITLES = ["Red leather sofa", "Oak dining table", "iPhone 12 case", "Kids bike 16 inch"] * 6
DESCRIPTIONS = [
    "Comfy red sofa, seats three. Collection only",
    "Solid oak table with six chairs",
    "Brand new case for iPhone 12 phones",
    "Childrens bike with stabilisers, good tyres",
] * 6
LABELS = np.array([0, 1, 2, 3] * 6)


def tiny_settings(**changes) -> TextSettings:
    values = dict(
        w2v_dim=12,
        w2v_epochs=3,
        w2v_min_count=1,
        max_tokens=12,
        max_title_tokens=5,
        conv_filters=8,
        text_dim=16,
        wide_max_tokens=300,
        batch_size=8,
        frozen_epochs=2,
        finetune_epochs=1,
        patience=5,
        dropout=0.1,
    )
    values.update(changes)
    return TextSettings(**values)


def test_tokeniser_lemmatises_without_a_model_download_and_splits_run_on_text() -> None:
    tokens = get_tokenizer().tokenize("Sofas (grey)for sale! cookingServes 4 people 😀😀")
    assert "sofa" in tokens  # lookup lemma of "Sofas"
    assert "grey" in tokens and "for" in tokens  # ")" no longer glues words
    assert "cook" in tokens and "serve" in tokens  # camel-case join split, then lemmatised
    assert all(any(ch.isalnum() for ch in t) for t in tokens)  # no emoji or punctuation tokens


@pytest.mark.parametrize("text", ["", "😀🔥👍", None, "  \n\t "])
def test_empty_or_emoji_only_text_gives_no_tokens(text) -> None:
    assert get_tokenizer().tokenize(text) == []


def test_word2vec_and_vocabulary_round_trip_without_pickle(tmp_path: Path) -> None:
    titles, descriptions = tokenize_listings(TITLES, DESCRIPTIONS)
    vectors = train_word2vec(titles + descriptions, tiny_settings(), seed=1)
    assert vectors.vector_size == 12 and "sofa" in vectors.key_to_index
    save_vectors(vectors, tmp_path)
    loaded = load_vectors(tmp_path)
    np.testing.assert_allclose(loaded["sofa"], vectors["sofa"], rtol=1e-6)
    assert (tmp_path / "word2vec.bin").read_bytes()[:1].isdigit()  # word2vec's own format, not a pickle

    vocab = Vocabulary.build(titles + descriptions, min_count=2, max_size=1000)
    assert vocab.tokens[:2] == [PAD, OOV]
    assert all(c >= 2 for c in vocab.counts[2:])
    vocab.save(tmp_path / "vocabulary.json")
    assert Vocabulary.load(tmp_path / "vocabulary.json") == vocab
    matrix = vocab.embedding_matrix(vectors, seed=0)
    assert matrix.shape == (len(vocab), 12)
    np.testing.assert_array_equal(matrix[0], 0)  # padding
    row = vocab.tokens.index("sofa")
    np.testing.assert_allclose(matrix[row], vectors["sofa"])  # initialised from Word2Vec


def test_word2vec_refuses_an_empty_corpus() -> None:
    with pytest.raises(ValueError, match="empty"):
        train_word2vec([[], []], tiny_settings(), seed=0)


def _encoder(settings: TextSettings) -> tuple[keras.Model, list[str], list[str]]:
    titles, descriptions = tokenize_listings(TITLES, DESCRIPTIONS)
    vectors = train_word2vec(titles + descriptions, settings, seed=0)
    vocab = Vocabulary.build(titles + descriptions, 1, 1000)
    t, d = [join(x) for x in titles], [join(x) for x in descriptions]
    encoder = build_text_encoder(settings, vocab.words, vocab.embedding_matrix(vectors, 0), t, d, seed=0)
    return encoder, t, d


@pytest.mark.parametrize("wide,deep", [(True, True), (False, True), (True, False)])
def test_text_model_shapes_and_identical_predictions_after_save_load(tmp_path: Path, wide, deep) -> None:
    settings = tiny_settings(wide=wide, deep=deep)
    encoder, titles, descriptions = _encoder(settings)
    model = build_text_classifier(encoder, 4, 0.1, seed=0)
    inputs = [string_batch(titles[:5] + [""]), string_batch(descriptions[:5] + [""])]  # incl. empty text
    assert encoder.predict(inputs, verbose=0).shape == (6, 16)
    probs = model.predict(inputs, verbose=0)
    assert probs.shape == (6, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "text.keras")
    again = keras.models.load_model(tmp_path / "text.keras", compile=False)
    np.testing.assert_allclose(again.predict(inputs, verbose=0), probs, rtol=1e-6, atol=1e-7)


def test_training_lowers_the_loss_and_unfreezes_the_embedding_in_phase_two() -> None:
    settings = tiny_settings(frozen_epochs=3, finetune_epochs=2, learning_rate=5e-3)
    encoder, titles, descriptions = _encoder(settings)
    model = build_text_classifier(encoder, 4, 0.1, seed=0)
    embedding = next(layer for layer in encoder.layers if layer.name == EMBEDDING_LAYER)
    before = embedding.get_weights()[0].copy()
    snapshots: list[np.ndarray] = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(embedding.get_weights()[0].copy())
    )
    train = text_dataset(titles, descriptions, LABELS, 8, shuffle_seed=0)
    history = train_text_classifier(model, train, train, settings, 4, callbacks=[record])
    assert history["loss"][-1] < history["loss"][0]
    assert history["phase"] == [1, 1, 1, 2, 2]
    assert history["best_val_accuracy"][0] > 0.5  # four separable listings
    np.testing.assert_array_equal(snapshots[2], before)  # frozen through phase 1
    assert not np.allclose(snapshots[-1], before)  # fine-tuned in phase 2
    assert set_embedding_trainable(model, False) is True


def test_leaf_head_trains_the_shared_encoder_and_is_left_out_of_the_saved_classifier(tmp_path) -> None:
    """The auxiliary leaf loss moves the encoder; the saved classifier stays root-only; leaf -1 adds nothing."""
    keras.utils.set_random_seed(0)
    settings = tiny_settings(frozen_epochs=12, finetune_epochs=0, learning_rate=1e-2, leaf_weight=1.0, patience=12)
    encoder, titles, descriptions = _encoder(settings)
    classifier, trainer = build_text_models(encoder, 2, 0.0, seed=0, n_leaves=4)
    inputs = [string_batch(titles[:4]), string_batch(descriptions[:4])]
    assert trainer.predict(inputs, verbose=0).shape == (4, 2 + 4)
    roots = LABELS // 2  # two roots of two leaves each: only the leaf head tells the leaves apart
    train = text_dataset(titles, descriptions, roots, 8, shuffle_seed=0, leaf_labels=LABELS)
    history = train_text_classifier(trainer, train, train, settings, 2, n_leaves=4)
    assert history["loss"][-1] < history["loss"][0]
    assert history["best_val_accuracy"][0] > 0.5  # the metric reads the root part only
    # keep-best restores the first epoch of best *root* accuracy; fit on to see the leaves learned
    trainer.fit(train, epochs=15, verbose=0)
    leaf_logits = trainer.predict(inputs, verbose=0)[:, 2:]
    np.testing.assert_array_equal(leaf_logits.argmax(axis=1), LABELS[:4])
    classifier.save(tmp_path / "text.keras")
    again = keras.models.load_model(tmp_path / "text.keras", compile=False)
    assert again.predict(inputs, verbose=0).shape == (4, 2)
    assert all(layer.name != "leaf_logits" for layer in again.layers)

    from fbmarket.text.train import compile_classifier

    compile_classifier(trainer, 1e-3, 0.0, 2, n_leaves=4, leaf_weight=1.0)
    y_pred = keras.ops.convert_to_tensor(trainer.predict(inputs, verbose=0))
    known = np.stack([roots[:4], LABELS[:4]], axis=1)
    unknown = np.stack([roots[:4], np.full(4, -1)], axis=1)
    root_only, _ = build_text_models(encoder, 2, 0.0, seed=0)
    compile_classifier(root_only, 1e-3, 0.0, 2)
    with_leaf = float(keras.ops.mean(trainer.loss(known, y_pred)))
    without_leaf = float(keras.ops.mean(trainer.loss(unknown, y_pred)))
    root_loss = float(keras.ops.mean(root_only.loss(roots[:4], y_pred[:, :2])))
    assert without_leaf == pytest.approx(root_loss, rel=1e-5)
    assert with_leaf > without_leaf


def test_sparse_input_dense_matches_dense_and_trains(tmp_path) -> None:
    """Same outputs and gradients as keras Dense on a mostly-zero input, and it saves and loads."""
    from fbmarket.text.branch import SparseInputDense

    rng = np.random.default_rng(0)
    x = np.where(rng.random((5, 300)) < 0.03, rng.random((5, 300)), 0.0).astype("float32")
    x[3] = 0.0  # an all-zero row (an empty text) is still a row of output
    sparse = SparseInputDense(7, activation="relu")
    dense = keras.layers.Dense(7, activation="relu")
    sparse.build((None, 300))
    dense.build((None, 300))
    dense.set_weights([w + 0.1 for w in sparse.get_weights()])
    sparse.set_weights(dense.get_weights())
    np.testing.assert_allclose(sparse(x), dense(x), rtol=1e-5, atol=1e-6)

    tensor = tf.constant(x)
    grads = []
    for layer in (sparse, dense):
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            loss = tf.reduce_sum(layer(tensor) ** 2)
        grads.append(tape.gradient(loss, [tensor, layer.kernel, layer.bias]))
    (x_sparse, *weights_sparse), (x_dense, *weights_dense) = grads
    for got, want in zip(weights_sparse, weights_dense, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    present = x != 0  # an input that is exactly zero counts as absent: no gradient reaches it
    np.testing.assert_allclose(tf.convert_to_tensor(x_sparse).numpy()[present], x_dense.numpy()[present], rtol=1e-4)

    inputs = keras.Input((300,))
    model = keras.Model(inputs, sparse(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[-1], SparseInputDense)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize(("monitor", "mode", "kept"), [("val_loss", "min", 2.0), ("val_accuracy", "max", 3.0)])
def test_keep_best_follows_the_monitor_direction(monitor: str, mode: str, kept: float) -> None:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keep = KeepBest(monitor, mode)
    keep.set_model(model)
    epochs = [(1.0, {"val_loss": 2.0, "val_accuracy": 0.5}), (2.0, {"val_loss": 0.5, "val_accuracy": 0.6}),
              (3.0, {"val_loss": 1.0, "val_accuracy": 0.7})]  # fmt: skip
    for epoch, (weight, logs) in enumerate(epochs):
        model.layers[0].set_weights([np.full((1, 1), weight, np.float32), np.zeros(1, np.float32)])
        keep.on_epoch_end(epoch, logs)
    model.layers[0].set_weights([np.zeros((1, 1), np.float32), np.zeros(1, np.float32)])
    keep.restore(model)
    assert float(model.layers[0].get_weights()[0][0, 0]) == kept
    assert keep.best_logs == epochs[int(kept) - 1][1]
