"""VectorIndex: ids, add/remove, filters, training, atomic save and load, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from fbmarket import files
from fbmarket.config import SearchSettings
from fbmarket.search.index import IdSelection, IndexLoadError, VectorIndex

DIM = 16
# Exact, IVF (tombstones: IndexIDMap2 removal is wrong for IVF), HNSW (no removal at all),
# scalar-quantised flat codes (hard removal) and a refined PQ fast-scan (no selector support).
FACTORIES = ["Flat", "IVF8,Flat", "HNSW16", "SQ8", "PQ8x4fs,RFlat"]


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """OpenMP spin-waiting makes tiny searches slow on a shared machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids_for(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def settings(**overrides) -> SearchSettings:
    # Generous knobs so that the approximate indexes are exact on these tiny sets.
    values = {"nprobe": 8, "ef_search": 256, "refine_k_factor": 50.0, "max_k": 100}
    values.update(overrides)
    return SearchSettings(**values)


def built(factory: str, n: int = 600, seed: int = 0) -> tuple[VectorIndex, list[str], np.ndarray]:
    index = VectorIndex(DIM, settings(), factory=factory)
    ids, x = ids_for(n), unit_vectors(n, seed)
    index.build(ids, x)
    return index, ids, x


def exact_top(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[str]:
    scores = x @ q
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize("factory", FACTORIES)
def test_search_finds_the_exact_neighbours(factory):
    index, ids, x = built(factory)
    q = unit_vectors(5, seed=1)
    for row in q:
        got = [pid for pid, _ in index.search(row, 10)]
        assert got == exact_top(x, ids, row, 10) or len(set(got) & set(exact_top(x, ids, row, 10))) >= 9
    own = index.search(x[42], 1)
    assert own[0][0] == "p42" and own[0][1] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("factory", FACTORIES)
def test_add_remove_save_load_round_trip_gives_identical_results(factory, tmp_path):
    index, ids, x = built(factory)
    index.remove(["p3", "p10", "p11"])
    index.add(["new1", "new2"], unit_vectors(2, seed=7))
    q = unit_vectors(8, seed=2)
    before = index.search_batch(q, 20)

    index.save(tmp_path / "vectors.faiss")
    loaded = VectorIndex.load(tmp_path / "vectors.faiss", settings())
    assert loaded.search_batch(q, 20) == before
    assert len(loaded) == len(index) == 600 - 3 + 2
    assert loaded.tombstone_count == index.tombstone_count
    assert loaded.factory == factory

    # both sides keep evolving identically after the load: ids are stable
    for side in (index, loaded):
        side.remove(["p20"])
        side.add(["new3"], unit_vectors(1, seed=9))
    assert loaded.search_batch(q, 20) == index.search_batch(q, 20)


@pytest.mark.parametrize("factory", FACTORIES)
def test_removed_listing_never_comes_back(factory):
    index, ids, x = built(factory)
    removed = {f"p{i}" for i in range(0, 600, 7)}
    assert index.remove(sorted(removed) + ["not-there"]) == len(removed)
    for i in range(0, 600, 35):  # query with the removed vectors themselves
        got = {pid for pid, _ in index.search(x[i], 30)}
        assert not got & removed
        assert len(got) == 30
    assert len(index) == 600 - len(removed)
    with pytest.raises(KeyError, match="p0"):
        index.reconstruct("p0")


@pytest.mark.parametrize("factory", ["IVF8,Flat", "HNSW16"])
def test_remaining_ids_stay_correct_after_removal(factory):
    """IndexIDMap2.remove_ids over IVF shifts ids; the index must not use it."""
    index, ids, x = built(factory)
    index.remove(ids[:10])
    for i in (100, 200, 599):
        assert index.search(x[i], 1)[0][0] == ids[i]


def test_hnsw_removal_uses_tombstones_and_compact_reclaims_them():
    index, ids, x = built("HNSW16")
    assert index.uses_tombstones
    index.remove(["p1", "p2", "p3"])
    assert index.tombstone_count == 3 and index.describe()["ntotal"] == 600
    q = unit_vectors(4, seed=3)
    before = index.search_batch(q, 15)
    assert index.compact() == 3
    assert index.tombstone_count == 0 and index.describe()["ntotal"] == 597
    after = index.search_batch(q, 15)
    # the same neighbours in the same order; scores equal up to float rounding (compaction
    # re-adds the vectors, and the distance kernel may sum them in another order)
    assert [[pid for pid, _ in row] for row in after] == [[pid for pid, _ in row] for row in before]
    np.testing.assert_allclose(
        [[score for _, score in row] for row in after], [[score for _, score in row] for row in before], atol=1e-6
    )
    assert index.search(x[1], 5)[0][0] != "p1"


def test_flat_removal_is_hard():
    index, ids, x = built("Flat")
    assert not index.uses_tombstones
    index.remove(["p1"])
    assert index.tombstone_count == 0 and index.describe()["ntotal"] == 599


def test_adding_an_existing_id_replaces_its_vector():
    index, ids, x = built("Flat")
    index.add(["p5"], x[9])
    assert len(index) == 600
    np.testing.assert_allclose(index.reconstruct("p5"), x[9], atol=1e-6)
    top = index.search(x[9], 2)
    assert {pid for pid, _ in top} == {"p5", "p9"}


@pytest.mark.parametrize("factory", FACTORIES)
def test_reconstruct_returns_the_stored_vector(factory):
    index, ids, x = built(factory)
    tolerance = 0.05 if factory == "SQ8" else 1e-5
    np.testing.assert_allclose(index.reconstruct("p17"), x[17], atol=tolerance)
    np.testing.assert_allclose(index.vectors_of(["p1", "p2"]), x[1:3], atol=tolerance)


@pytest.mark.parametrize("factory", FACTORIES)
def test_filter_returns_k_allowed_results_when_they_exist(factory):
    index, ids, x = built(factory)
    index.remove(["p0", "p6"])
    allowed = [f"p{i}" for i in range(0, 600, 6)]  # 100 ids, 1 of them removed
    q = unit_vectors(3, seed=4)
    for row in q:
        got = index.search(row, 25, allowed=allowed)
        assert len(got) == 25
        assert {pid for pid, _ in got} <= set(allowed) - {"p0", "p6"}
        live = [pid for pid in allowed if pid not in ("p0", "p6")]
        expected = exact_top(x[[int(p[1:]) for p in live]], live, row, 25)
        if factory == "SQ8":  # 8-bit codes: near-ties may swap
            assert len({pid for pid, _ in got} & set(expected)) >= 23
        else:
            assert [pid for pid, _ in got] == expected
    tiny = index.search(q[0], 25, allowed=["p1", "p2", "p6", "unknown"])
    assert {pid for pid, _ in tiny} == {"p1", "p2"}
    assert index.search(q[0], 5, allowed=[]) == []


def test_k_larger_than_the_catalogue_returns_everything():
    index = VectorIndex(DIM, settings())
    index.build(ids_for(5), unit_vectors(5))
    assert len(index.search(unit_vectors(1, 3)[0], 50)) == 5
    assert VectorIndex(DIM, settings()).search(unit_vectors(1)[0], 5) == []


@pytest.mark.parametrize("k", [0, -1, 101, 2.5, True, "10"])
def test_k_out_of_range_is_a_clear_error(k):
    index, _, _ = built("Flat", n=20)
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit_vectors(1)[0], k)


def test_bad_vectors_and_ids_are_clear_errors():
    index = VectorIndex(DIM, settings())
    with pytest.raises(ValueError, match="dimension 16"):
        index.build(["a"], np.ones((1, 8), np.float32))
    bad = unit_vectors(2)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.build(["a", "b"], bad)
    with pytest.raises(ValueError, match="duplicate product ids: a"):
        index.build(["a", "a"], unit_vectors(2))
    with pytest.raises(ValueError, match="2 product ids but 3 vectors"):
        index.add(["a", "b"], unit_vectors(3))
    with pytest.raises(ValueError, match="cannot build index type"):
        VectorIndex(DIM, settings(), factory="NotAnIndex42")


def test_training_is_required_and_too_little_data_says_so():
    index = VectorIndex(DIM, settings(), factory="IVF64,Flat")
    assert not index.is_trained
    with pytest.raises(ValueError, match="needs training"):
        index.add(["a"], unit_vectors(1))
    with pytest.raises(ValueError, match="'Flat'"):
        index.build(ids_for(10), unit_vectors(10))
    index.build(ids_for(3000), unit_vectors(3000))
    assert index.is_trained and len(index) == 3000


def test_save_survives_a_failure_injected_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "vectors.faiss"
    index, _, _ = built("Flat")
    index.save(path)
    q = unit_vectors(4, seed=5)
    expected = index.search_batch(q, 10)
    old_bytes = path.read_bytes()

    def torn_write(idx, filename):
        Path(filename).write_bytes(b"FAISS-PARTIAL" * 100)  # half a file, then the disk fills
        raise OSError(28, "No space left on device")

    changed, _, _ = built("Flat", seed=99)
    monkeypatch.setattr(faiss, "write_index", torn_write)
    with pytest.raises(OSError, match="No space"):
        changed.save(path)
    monkeypatch.undo()

    assert path.read_bytes() == old_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, *(p.name for p in tmp_path.glob("vectors.faiss.ids-*.json"))]
    )
    assert len(list(tmp_path.glob("*.tmp"))) == 0
    assert VectorIndex.load(path, settings()).search_batch(q, 10) == expected


def test_crash_before_the_switch_keeps_the_old_pair(tmp_path, monkeypatch):
    path = tmp_path / "vectors.faiss"
    index, _, _ = built("Flat")
    index.save(path)
    q = unit_vectors(4, seed=6)
    expected = index.search_batch(q, 10)

    real_replace = os.replace
    calls = []

    def crash_on_index_rename(src, dst):
        calls.append(dst)
        if Path(dst) == path:
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_on_index_rename)
    changed, _, _ = built("Flat", seed=98)
    with pytest.raises(OSError, match="power cut"):
        changed.save(path)
    monkeypatch.undo()
    assert len(calls) == 2  # the new id map was published, the index was not
    assert VectorIndex.load(path, settings()).search_batch(q, 10) == expected

    changed.save(path)  # the next good save publishes the new pair and drops stale id maps
    assert VectorIndex.load(path, settings()).search_batch(q, 10) == changed.search_batch(q, 10)
    assert len(list(tmp_path.glob("vectors.faiss.ids-*.json"))) == 1


def test_corrupt_or_missing_files_raise_index_load_error(tmp_path):
    path = tmp_path / "vectors.faiss"
    with pytest.raises(IndexLoadError, match="no FAISS index file"):
        VectorIndex.load(path)

    index, _, _ = built("Flat", n=50)
    index.save(path)
    serving = VectorIndex.load(path, settings())
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(IndexLoadError, match="corrupt, truncated"):
        VectorIndex.load(path)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF  # one flipped bit in the vectors
    path.write_bytes(bytes(flipped))
    with pytest.raises(IndexLoadError, match="no id map matches"):
        VectorIndex.load(path)

    path.write_bytes(good)
    (side,) = tmp_path.glob("vectors.faiss.ids-*.json")
    side.write_text("{not json")
    with pytest.raises(IndexLoadError, match="unreadable or corrupt"):
        VectorIndex.load(path)
    side.unlink()
    with pytest.raises(IndexLoadError, match="id map"):
        VectorIndex.load(path)

    # the index already in memory keeps serving
    assert serving.search(unit_vectors(1)[0], 3)


def test_resolved_id_selection_matches_product_id_filter_and_goes_stale():
    index, ids, x = built("HNSW16")
    index.remove(["p4"])
    wanted = [f"p{i}" for i in range(0, 60, 2)]
    ints = index.internal_ids(wanted + ["nope"])
    assert ints[2] == -1 and ints[-1] == -1 and (ints[[0, 1, 3]] >= 0).all()
    selection = IdSelection(ints[ints >= 0], index.version)
    q = unit_vectors(1, seed=8)[0]
    assert index.search(q, 10, selection) == index.search(q, 10, wanted)
    index.add(["late"], q)
    with pytest.raises(ValueError, match="stale IdSelection"):
        index.search(q, 10, selection)
