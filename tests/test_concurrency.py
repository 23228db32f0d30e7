"""Concurrency: a burst of mixed requests on the HTTP server, shared Retriever and index searches, and checkpoint reads during writes.

Serial results are the oracle: each concurrent response must equal the
response to the same query sent alone. Every burst is bounded in count and time and
sends traffic to the loopback address only.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from recx.data import Interactions
from recx.index import ItemIndex
from recx.serving import Retriever, export_bundle
from recx.serving.http import RetrievalServer, create_server
from recx.training import TrainConfig, TrainingHistory, TwoTowerRecommender
from recx.training.resume import EpochCheckpoints, TrainingState, read_training_state

MAX_BODY_BYTES = 4096
SOCKET_TIMEOUT_SECONDS = 30


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory) -> Retriever:
    """A bundle of a one-epoch model on 30 users (string ids) in 3 clusters of 12 items."""
    generator = np.random.default_rng(3)
    rows = []
    for cluster in range(3):
        for member in range(10):
            for time, item in enumerate(generator.choice(12, size=8, replace=False) + 12 * cluster):
                rows.append((f"u{cluster}-{member}", int(item), time))
    data = Interactions.from_dataframe(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), timestamp_col="timestamp")
    training = TrainConfig(epochs=1, batch_size=64, show_progress=False, patience=0, device="cpu", seed=0)
    model = TwoTowerRecommender(embedding_dim=8, hidden_dims=[16], output_dim=8, training=training).fit(data)
    return Retriever.load(export_bundle(model, tmp_path_factory.mktemp("bundles") / "concurrency"))


@pytest.fixture()
def server(retriever: Retriever) -> Iterator[RetrievalServer]:
    running = create_server(retriever, "127.0.0.1", 0, max_body_bytes=MAX_BODY_BYTES)
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=10)


# --------------------------------------------------------------------------- HTTP burst

# Each request: (method, path, body) for http.client, or ("RAW", bytes, None) sent as is over a socket.
Request = tuple[str, Any, Any]


def _requests(retriever: Retriever) -> list[Request]:
    """200 requests cycling through valid queries and each kind of invalid one."""
    users = retriever.user_ids.ids.tolist()
    items = retriever.item_ids.ids.tolist()
    kinds = [
        lambda i: ("GET", f"/recommend?user_id={users[i % len(users)]}&k=5", None),
        lambda i: ("GET", f"/similar_items?item_id={items[i % len(items)]}&k=3", None),
        lambda i: ("POST", "/recommend_from_history", json.dumps({"item_ids": items[i % 20 : i % 20 + 4], "k": 4}).encode()),
        lambda i: ("GET", "/health", None),
        lambda i: ("GET", f"/recommend?user_id=nobody-{i}&k=5", None),
        lambda i: ("GET", f"/recommend?user_id={users[0]}&k=0", None),
        lambda i: ("POST", "/recommend_from_history", b"{not json"),
        lambda i: ("POST", "/recommend_from_history", json.dumps({"item_ids": items * 40, "k": 3}).encode()),
        lambda i: ("DELETE", "/health", None),
        lambda i: ("GET", f"/nowhere/{i}", None),
        lambda i: ("RAW", b"BREW /health HTTP/1.1\r\n\r\n", None),
        lambda i: ("RAW", b"GET /health HTTP/1.1\r\n" + b"".join(b"X-Filler-%d: 1\r\n" % n for n in range(120)) + b"\r\n", None),
    ]
    return [kinds[i % len(kinds)](i) for i in range(200)]


def _send(server: RetrievalServer, request: Request) -> tuple[int, dict[str, Any]]:
    """Send one request on a new connection; return the status and the decoded JSON body."""
    host, port = server.server_address[:2]
    method, target, body = request
    if method == "RAW":
        with socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_SECONDS) as connection:
            connection.sendall(target)
            response = http.client.HTTPResponse(connection)
            response.begin()
            return response.status, json.loads(response.read())
    connection = http.client.HTTPConnection(host, port, timeout=SOCKET_TIMEOUT_SECONDS)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json; charset=utf-8"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_http_burst_of_mixed_requests(server: RetrievalServer, retriever: Retriever) -> None:
    """200 requests from 16 threads, half of them invalid, get the serial responses, every error as JSON, and the server stays up."""
    requests = _requests(retriever)
    serial = [_send(server, request) for request in requests]
    statuses = {status for status, _ in serial}
    assert statuses == {200, 400, 404, 405, 413, 431, 501}
    for status, body in serial:
        if status != 200:
            assert isinstance(body["error"], str) and body["error"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        parallel = list(pool.map(lambda request: _send(server, request), requests))
    assert parallel == serial

    # Valid responses equal the Retriever's results, and the server still serves.
    status, body = _send(server, ("GET", f"/recommend?user_id={retriever.user_ids.ids[0]}&k=5", None))
    assert status == 200
    assert body["item_ids"] == retriever.recommend(retriever.user_ids.ids[0], 5)[0].tolist()
    assert _send(server, ("GET", "/health", None))[1]["status"] == "ok"


def test_malformed_request_gets_json(server: RetrievalServer) -> None:
    """Errors found before routing (an unknown method, too many headers) are JSON with the reason."""
    status, body = _send(server, ("RAW", b"BREW /health HTTP/1.1\r\n\r\n", None))
    assert status == 501
    assert body == {"error": "Unsupported method ('BREW'). Server does not support this operation."}
    status, body = _send(server, ("RAW", b"GET /health HTTP/1.1\r\n" + b"X-A: 1\r\n" * 120 + b"\r\n", None))
    assert status == 431
    assert body["error"].startswith("Too many headers. ")


@pytest.mark.parametrize("size", [100_000, 800_000])
def test_oversized_body_gets_413_while_client_sends(server: RetrievalServer, size: int) -> None:
    """A body far over the limit still gets its 413 JSON response, rather than a reset while the client is sending."""
    status, body = _send(server, ("POST", "/recommend_from_history", b"x" * size))
    assert status == 413
    assert body == {"error": f"the request body has {size} bytes, more than the limit of {MAX_BODY_BYTES}. Send a shorter history."}


# --------------------------------------------------------------------------- shared Retriever and index


def test_retriever_threads_with_errors_match_serial(retriever: Retriever) -> None:
    """Eight threads mixing valid and invalid queries on one Retriever get the serial results and the serial errors."""
    users = retriever.user_ids.ids.tolist()
    items = retriever.item_ids.ids.tolist()
    queries: list[tuple[str, Any]] = []
    for i in range(120):
        queries.append([("recommend", users[i % len(users)]), ("recommend", f"ghost-{i}"), ("history", items[i % 30 : i % 30 + 3]), ("history", [-i - 1]), ("similar", items[i % len(items)])][i % 5])

    def run(query: tuple[str, Any]) -> tuple[str, Any]:
        kind, argument = query
        try:
            if kind == "recommend":
                ids, scores = retriever.recommend(argument, 6)
            elif kind == "history":
                ids, scores = retriever.recommend_from_history(argument, 6)
            else:
                ids, scores = retriever.similar_items(argument, 6)
        except (KeyError, ValueError) as error:
            return type(error).__name__, str(error)
        return "ok", (ids.tolist(), scores.tolist())

    serial = [run(query) for query in queries]
    assert {outcome for outcome, _ in serial} == {"ok", "UnknownIdError"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, queries))
    assert parallel == serial


@pytest.mark.parametrize(("kind", "options", "width"), [("ivf_flat", {"nlist": 16}, "nprobe"), ("hnsw", {"hnsw_m": 8}, "ef_search")])
def test_approximate_index_threads_with_own_widths(kind: str, options: dict[str, int], width: str) -> None:
    """Threads that search one approximate index, each with its own nprobe or ef_search, get the serial results."""
    generator = np.random.default_rng(5)
    index = ItemIndex(generator.normal(size=(2000, 16)).astype(np.float32), np.arange(2000), kind=kind, device="cpu", **options)
    queries = generator.normal(size=(20, 16)).astype(np.float32)
    settings = [1, 2, 4, 8, 16] * 8

    def search(value: int) -> tuple[list[list[int]], list[list[float]]]:
        indices, scores = index.search_indices(queries, 10, **{width: value})
        return indices.tolist(), scores.tolist()

    serial = [search(value) for value in settings]
    assert len({json.dumps(result[0]) for result in serial}) > 1
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(search, settings))
    assert parallel == serial


# --------------------------------------------------------------------------- checkpoint reads during writes


def _state(epoch: int) -> TrainingState:
    """A small training state whose every part records ``epoch``, so a mixed read is detectable."""
    weights = {"tower.weight": torch.full((64, 8), float(epoch)), "tower.bias": torch.full((8,), float(epoch))}
    history = TrainingHistory()
    history.best_epoch = epoch
    return TrainingState(
        epoch=epoch,
        history={**history.to_dict(), "epochs": [{"epoch": e, "loss": float(e), "seconds": 0.0, "validation": None} for e in range(1, epoch + 1)]},
        epochs_without_gain=epoch,
        model_state=weights,
        best_state=weights,
        optimizer_state={"state": {0: {"step": torch.tensor(float(epoch)), "exp_avg": torch.full((64, 8), float(epoch))}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        generator_state=np.random.default_rng(epoch).bit_generator.state,
        torch_rng_state=torch.get_rng_state(),
        cuda_rng_states=[],
        fingerprint={"run": "concurrency"},
    )


def test_checkpoint_reader_never_sees_partial_state(tmp_path: Path) -> None:
    """Readers polling while epochs are written always load one complete epoch, never a mix or a partial file."""
    checkpoints = EpochCheckpoints(tmp_path, {"run": "concurrency"})
    checkpoints.save(_state(1))
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def read() -> None:
        # Each reader reads at least once, and on until the writer is done.
        while True:
            try:
                state = read_training_state(tmp_path)
            except (OSError, ValueError) as error:
                problems.append(f"read failed: {error!r}")
                return
            epoch = state.epoch
            consistent = (
                len(state.history["epochs"]) == epoch
                and state.epochs_without_gain == epoch
                and bool((state.model_state["tower.weight"] == epoch).all())
                and float(state.optimizer_state["state"][0]["step"]) == epoch
                and state.generator_state == np.random.default_rng(epoch).bit_generator.state
            )
            if not consistent:
                problems.append(f"mixed state read at epoch {epoch}")
            seen.append(epoch)
            if done.is_set():
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for epoch in range(2, 31):
            checkpoints.save(_state(epoch))
    finally:
        done.set()
        for reader in readers:
            reader.join(timeout=60)
    assert problems == []
    assert len(seen) >= len(readers)
    assert read_training_state(tmp_path).epoch == 30
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-0030", "latest.json"]
