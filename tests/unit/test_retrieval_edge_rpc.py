"""The embedded store's socket protocol (retrieval.edge_rpc) with a small engine double."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.edge_points import dense_rows
from retrieval.edge_rpc import Client, Server
from sirocco.errors import InvalidInputError


class Engine:
    """Records writes; ``count`` fails as a real engine's bad input would."""

    def __init__(self) -> None:
        self.writes: list[dict] = []

    def write(self, *, doc_ids, points, dim, dense=b""):
        self.writes.append({"doc_ids": doc_ids, "points": points, "dim": dim,
                            "rows": dense_rows(dense, len(points), dim or 0)})

    def count(self, *, doc_id=None):
        raise InvalidInputError(f"no such document {doc_id}")


@pytest.fixture
def pair(tmp_path):
    engine = Engine()
    server = Server(engine, tmp_path / "owner.sock")
    client = Client(tmp_path / "owner.sock", timeout_s=10)
    yield engine, client
    client.close()
    server.close()


def test_dense_vectors_cross_as_float32_bytes_beside_the_json(pair):
    engine, client = pair
    vectors = np.random.default_rng(0).standard_normal((300, 384)).astype("<f4")
    points = [{"id": f"p{i}", "sparse": [[1], [0.5]], "payload": {"n": i}} for i in range(300)]
    client.call("write", doc_ids=["d"], points=points, dim=384, dense=vectors.tobytes())
    client.call("write", doc_ids=["gone"], points=[], dim=None)  # a delete: no attachment
    first, delete = engine.writes
    assert first["points"] == points and first["doc_ids"] == ["d"]
    assert np.array_equal(np.asarray(first["rows"], dtype="<f4"), vectors)
    assert delete == {"doc_ids": ["gone"], "points": [], "dim": None, "rows": []}


def test_errors_and_bad_calls_come_back_as_errors(pair):
    _, client = pair
    with pytest.raises(InvalidInputError, match="no such document x"):
        client.call("count", doc_id="x")
    with pytest.raises(ValueError, match="unknown operation"):
        client.call("drop_everything")
    with pytest.raises(ValueError, match="one bytes argument"):
        client.call("write", a=b"1", b=b"2")


def test_dense_rows_refuses_an_array_of_the_wrong_size():
    with pytest.raises(ValueError, match="12 bytes of dense vectors for 2 points of 2"):
        dense_rows(b"\0" * 12, 2, 2)
