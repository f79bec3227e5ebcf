"""The neighbour-vote late-fusion members (fusion/neighbours.py): votes, masks, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from fbmarket.fusion import late
from fbmarket.fusion.neighbours import PHOTO, TEXT, NeighbourVote, load_votes, save_votes


def _clusters(n_per: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated clusters, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 5
    x = np.concatenate([centres[c] + rng.normal(size=(n_per, dim)) for c in range(3)])
    return x.astype(np.float32), np.repeat(np.arange(3), n_per)


def test_the_vote_follows_the_nearest_references_and_rows_sum_to_one() -> None:
    x, y = _clusters(30, 8, 0)
    vote = NeighbourVote(x, y, n_classes=4, k=5, temperature=0.05)
    queries, truth = _clusters(10, 8, 1)
    probs = vote.predict_proba(queries)
    assert probs.shape == (30, 4)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == truth).mean() > 0.95
    assert probs[:, 3].max() < 0.01  # a category no reference has stays near zero, never exactly 0
    assert probs[:, 3].min() > 0


def test_the_weights_follow_exp_of_cosine_over_temperature() -> None:
    references = np.array([[1.0, 0.0], [0.8, 0.6]], np.float32)  # cosines 1.0 and 0.8 to the query
    vote = NeighbourVote(references, np.array([0, 1]), n_classes=2, k=2, temperature=0.1)
    p = vote.predict_proba(np.array([[2.0, 0.0]]))[0]
    w0, w1 = 1.0 + 1e-3, np.exp((0.8 - 1.0) / 0.1) + 1e-3
    assert p == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], rel=1e-4)


def test_a_query_without_features_gets_the_uniform_distribution() -> None:
    x, y = _clusters(5, 4, 0)
    dense = NeighbourVote(x, y, 3).predict_proba(np.zeros((2, 4)))
    words = NeighbourVote(sparse.csr_matrix(x), y, 3).predict_proba(sparse.csr_matrix((2, 4)))
    assert np.allclose(dense, 1 / 3) and np.allclose(words, 1 / 3)


def test_sparse_and_dense_references_agree_across_query_chunks() -> None:
    x, y = _clusters(20, 6, 0)
    queries = np.random.default_rng(3).normal(size=(1100, 6))  # > two CHUNKs
    a = NeighbourVote(x, y, 3, k=7).predict_proba(queries)
    b = NeighbourVote(sparse.csr_matrix(x), y, 3, k=7).predict_proba(sparse.csr_matrix(queries))
    assert np.allclose(a, b, atol=1e-5)


def test_refusals() -> None:
    x, y = _clusters(5, 4, 0)
    with pytest.raises(ValueError, match="reference rows"):
        NeighbourVote(x, y[:-1], 3)
    with pytest.raises(ValueError, match="outside"):
        NeighbourVote(x, y + 5, 3)
    with pytest.raises(ValueError, match="k must be"):
        NeighbourVote(x, y, 3, k=0)
    with pytest.raises(ValueError, match="features"):
        NeighbourVote(x, y, 3).predict_proba(np.zeros((1, 5)))


def test_round_trip_without_pickle(tmp_path: Path) -> None:
    x, y = _clusters(10, 6, 0)
    votes = {TEXT: NeighbourVote(sparse.csr_matrix(x), y, 3, k=4), PHOTO: NeighbourVote(x, y, 3, k=6, temperature=0.1)}
    path = tmp_path / "neighbours.npz"
    save_votes(path, votes)
    with np.load(path, allow_pickle=False) as archive:  # every member a plain array
        assert all(archive[key].dtype != object for key in archive.files)
    loaded = load_votes(path)
    assert set(loaded) == {TEXT, PHOTO} and loaded[PHOTO].k == 6 and loaded[PHOTO].temperature == 0.1
    queries = np.random.default_rng(1).normal(size=(20, 6))
    for name in votes:  # float16 references move the probabilities by little
        q = sparse.csr_matrix(queries) if name == TEXT else queries
        assert np.allclose(loaded[name].predict_proba(q), votes[name].predict_proba(q), atol=2e-2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:100]),
        lambda p: p.write_text("not a zip"),
        lambda p: np.savez(p.open("wb"), config=np.asarray(json.dumps({"format": 99, "members": {}}))),
        lambda p: np.savez(p.open("wb"), other=np.zeros(3)),
    ],
    ids=["truncated", "garbage", "newer-format", "foreign"],
)
def test_a_damaged_file_is_a_value_error_naming_it(tmp_path: Path, damage) -> None:
    x, y = _clusters(5, 4, 0)
    path = tmp_path / "neighbours.npz"
    save_votes(path, {PHOTO: NeighbourVote(x, y, 3)})
    damage(path)
    with pytest.raises(ValueError, match="neighbours.npz: not a readable neighbours file"):
        load_votes(path)


def test_the_pooling_silences_photo_votes_without_photos_and_text_votes_without_words() -> None:
    probs = {name: np.full((2, 3), 1 / 3) for name in late.MEMBERS}
    _, masks = late.member_inputs(probs, has_photo=np.array([1, 0]), has_text=np.array([0, 1]))
    assert masks[PHOTO].tolist() == [1, 0] and masks["image"].tolist() == [1, 0]
    assert masks[TEXT].tolist() == [0, 1] and masks["tfidf"].tolist() == [0, 1]
