"""The vectorised local-mode sparse scoring equals qdrant-client's own."""

from __future__ import annotations

import random

import numpy as np
import pytest
from qdrant_client.http.models import SparseVector
from qdrant_client.local.sparse_distances import calculate_distance_sparse as original

from retrieval.local_speedups import calculate_distance_sparse as fast


def _vec(rng: random.Random, n: int) -> SparseVector:
    idx = sorted(rng.sample(range(200), n))
    return SparseVector(indices=idx, values=[rng.random() * 3 for _ in idx])


@pytest.mark.parametrize("empty_is_zero", [False, True])
def test_same_scores_as_qdrant_client(empty_is_zero):
    rng = random.Random(7)
    vectors = [_vec(rng, rng.choice([0, 1, 3, 20, 60])) for _ in range(300)]
    for q in [_vec(rng, k) for k in (1, 4, 15)] + [SparseVector(indices=[500], values=[1.0])]:
        want = original(q, vectors, empty_is_zero=empty_is_zero)
        got = fast(q, vectors, empty_is_zero=empty_is_zero)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_changed_vector_list_is_not_served_from_the_cache():
    rng = random.Random(3)
    vectors = [_vec(rng, 10) for _ in range(50)]
    q = _vec(rng, 30)
    fast(q, vectors)
    vectors[10] = SparseVector(indices=list(range(200)), values=[5.0] * 200)  # an upsert
    np.testing.assert_allclose(fast(q, vectors), original(q, vectors), rtol=1e-5)
    vectors.append(_vec(rng, 5))
    np.testing.assert_allclose(fast(q, vectors), original(q, vectors), rtol=1e-5)
    assert len(fast(q, [])) == 0


def test_a_sliced_copy_of_the_same_vectors_reuses_the_flattening(monkeypatch):
    import retrieval.local_speedups as ls

    rng = random.Random(5)
    vectors = [_vec(rng, 8) for _ in range(40)]
    q = _vec(rng, 10)
    builds = []
    real = ls.np.fromiter
    monkeypatch.setattr(ls.np, "fromiter", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    for _ in range(3):
        fast(q, vectors[: len(vectors)])  # qdrant-client slices its list on every search
    assert len(builds) == 3  # lens, indices, values: flattened once
