"""Tests of the JSON HTTP endpoint, in-process on a loopback port and through `recx serve`."""

from __future__ import annotations

import http.client
import json
import logging
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recx.data import Interactions, load_dataset
from recx.serving import Retriever, export_bundle
from recx.serving.http import RetrievalServer, create_server
from recx.training import TrainConfig, TwoTowerRecommender

# Smaller than any valid history body of the tests below is long, so that 413 can be provoked cheaply.
MAX_BODY_BYTES = 4096


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of a tiny model trained on the first 30 users of the embedded MovieLens copy (integer ids, titles)."""
    full = load_dataset("movielens-latest-small")
    frame = full.to_dataframe()
    frame = frame[frame["user_id"] <= 30]
    metadata = full.item_metadata.copy()
    metadata.index = full.items.ids
    data = Interactions.from_dataframe(frame, timestamp_col="timestamp", item_metadata=metadata)
    training = TrainConfig(epochs=1, batch_size=512, show_progress=False, patience=0, device="cpu", seed=1)
    model = TwoTowerRecommender(embedding_dim=8, hidden_dims=[16], output_dim=8, training=training).fit(data)
    return export_bundle(model, tmp_path_factory.mktemp("bundles") / "http")


@pytest.fixture(scope="module")
def retriever(bundle: Path) -> Retriever:
    return Retriever.load(bundle)


@pytest.fixture(scope="module")
def server(retriever: Retriever) -> Iterator[RetrievalServer]:
    """A server on a free loopback port, running in a background thread."""
    running = create_server(retriever, "127.0.0.1", 0, max_body_bytes=MAX_BODY_BYTES)
    thread = threading.Thread(target=running.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()
    thread.join(timeout=10)


def _request(server: RetrievalServer, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}, response
    finally:
        connection.close()


def _post_json(server: RetrievalServer, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    status, body, _ = _request(server, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    return status, body


def test_health(server: RetrievalServer, retriever: Retriever) -> None:
    """GET /health reports the bundle's size."""
    status, body, response = _request(server, "GET", "/health")
    assert status == 200
    assert response.getheader("Content-Type") == "application/json; charset=utf-8"
    assert body["status"] == "ok"
    assert body["n_items"] == retriever.n_items
    assert body["n_users"] == retriever.n_users


def test_recommend_equals_retriever(server: RetrievalServer, retriever: Retriever) -> None:
    """GET /recommend returns the Retriever's ids, scores and titles; query-string ids map to int ids."""
    for user_id in retriever.user_ids.ids[:10].tolist():
        status, body, _ = _request(server, "GET", f"/recommend?user_id={user_id}&k=7")
        assert status == 200
        ids, scores = retriever.recommend(user_id, 7)
        assert body["user_id"] == user_id
        assert body["item_ids"] == ids.tolist()
        assert body["scores"] == scores.tolist()
        assert body["titles"] == retriever.titles(ids.tolist())
    status, body, _ = _request(server, "GET", "/recommend?user_id=1&k=5&exclude_seen=false")
    assert status == 200
    assert body["item_ids"] == retriever.recommend(1, 5, exclude_seen=False)[0].tolist()


def test_recommend_from_history_equals_retriever(server: RetrievalServer, retriever: Retriever) -> None:
    """POST /recommend_from_history returns the Retriever's result, with ids given as numbers or text."""
    history = retriever.item_ids.ids[:6].tolist()
    ids, scores = retriever.recommend_from_history(history, 5)
    status, body = _post_json(server, "/recommend_from_history", {"item_ids": history, "k": 5})
    assert status == 200
    assert body["item_ids"] == ids.tolist()
    assert body["scores"] == scores.tolist()
    status, body = _post_json(server, "/recommend_from_history", {"item_ids": [str(item) for item in history], "k": 5})
    assert status == 200
    assert body["item_ids"] == ids.tolist()
    status, body = _post_json(server, "/recommend_from_history", {"item_ids": history + [-1], "k": 5, "ignore_unknown": True, "exclude_history": False})
    assert status == 200
    assert body["item_ids"] == retriever.recommend_from_history(history, 5, exclude_history=False)[0].tolist()


def test_similar_items_equals_retriever(server: RetrievalServer, retriever: Retriever) -> None:
    """GET /similar_items returns the Retriever's neighbours."""
    item_id = retriever.item_ids.ids[3].item()
    ids, scores = retriever.similar_items(item_id, 4)
    status, body, _ = _request(server, "GET", f"/similar_items?item_id={item_id}&k=4")
    assert status == 200
    assert body["item_id"] == item_id
    assert body["item_ids"] == ids.tolist()
    assert body["scores"] == scores.tolist()


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/recommend?user_id=1&k=0", 400, "k must be a positive integer, got 0. Pass for example k=10."),
        ("GET", "/recommend?user_id=1&k=ten", 400, "k must be an integer, got 'ten'. Pass for example k=10."),
        ("GET", "/recommend?user_id=1&k=100000", 400, "k=100000 is larger than the catalogue of"),
        ("GET", "/recommend?k=5", 400, "missing query parameter 'user_id': pass ?user_id=ID."),
        ("GET", "/recommend?user_id=1&user_id=2", 400, "query parameter(s) ['user_id'] given more than once; pass each once."),
        ("GET", "/recommend?user_id=1&colour=red", 400, "unknown query parameter(s) ['colour']; this endpoint accepts ['user_id', 'k', 'exclude_seen']."),
        ("GET", "/recommend?user_id=1&exclude_seen=maybe", 400, "exclude_seen must be true or false, got 'maybe'."),
        ("GET", "/recommend?user_id=424242", 404, "unknown user id 424242: the bundle has no embedding for it"),
        ("GET", "/recommend?user_id=abc", 404, "unknown user id 'abc': "),
        ("GET", "/similar_items?item_id=-7&k=3", 404, "unknown item id -7: the catalogue of"),
        ("GET", "/nowhere", 404, "unknown path '/nowhere'. Endpoints: GET /health, GET /recommend, GET /similar_items, POST /recommend_from_history."),
        ("POST", "/recommend?user_id=1", 405, "/recommend accepts GET, not POST."),
        ("GET", "/recommend_from_history", 405, "/recommend_from_history accepts POST, not GET."),
        ("DELETE", "/health", 405, "/health accepts GET, not DELETE."),
    ],
)
def test_get_errors(server: RetrievalServer, method: str, path: str, status: int, message: str) -> None:
    """Invalid requests get the status and a JSON message that names the value and the fix."""
    found_status, body, response = _request(server, method, path)
    assert found_status == status
    assert body["error"].startswith(message)
    if status == 405:
        assert response.getheader("Allow") in ("GET", "POST")


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"item_ids": [], "k": 5}, 400, "the history is empty: item_ids contains no item ids."),
        ({"item_ids": [1], "k": 0}, 400, "k must be a positive integer, got 0."),
        ({"item_ids": [1], "k": "5"}, 400, '"k" must be an integer, got "5".'),
        ({"item_ids": "1", "k": 5}, 400, '"item_ids" must be a JSON array of item ids, got str.'),
        ({"k": 5}, 400, 'missing key "item_ids": send {"item_ids": [...], "k": 10}.'),
        ({"item_ids": [1], "colour": "red"}, 400, "unknown key(s) ['colour'] in the request body;"),
        ({"item_ids": [1], "exclude_history": "yes"}, 400, '"exclude_history" must be true or false, got "yes".'),
        ({"item_ids": [1.5]}, 400, "item ids are integers or strings, got float 1.5."),
        ({"item_ids": [1, 987654321]}, 404, "unknown item id(s) [987654321] in the history"),
        ([1, 2], 400, "the request body must be a JSON object, got list."),
    ],
)
def test_post_errors(server: RetrievalServer, payload: Any, status: int, message: str) -> None:
    """Invalid history requests get 400 (bad input) or 404 (unknown ids) with the message."""
    found_status, body = _post_json(server, "/recommend_from_history", payload)
    assert found_status == status
    assert body["error"].startswith(message)


def test_post_body_limits(server: RetrievalServer) -> None:
    """Bodies over the limit get 413, bodies that are not JSON 400, and a POST without length 411."""
    oversized = json.dumps({"item_ids": list(range(2000)), "k": 5}).encode()
    assert len(oversized) > MAX_BODY_BYTES
    status, body, _ = _request(server, "POST", "/recommend_from_history", oversized, {"Content-Type": "application/json"})
    assert status == 413
    assert body["error"] == f"the request body has {len(oversized)} bytes, more than the limit of {MAX_BODY_BYTES}. Send a shorter history."

    status, body, _ = _request(server, "POST", "/recommend_from_history", b"{not json", {"Content-Type": "application/json"})
    assert status == 400
    assert body["error"].startswith("the request body is not valid UTF-8 JSON (")

    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/recommend_from_history")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 411
        assert json.loads(response.read())["error"] == "the request has no Content-Length header. Send the JSON body with its length."
    finally:
        connection.close()


def test_errors_logged_with_ids(server: RetrievalServer, caplog: pytest.LogCaptureFixture) -> None:
    """Each error is one warning line with the status, the path and the ids of the request."""
    with caplog.at_level(logging.WARNING, logger="recx.serving.http"):
        _request(server, "GET", "/recommend?user_id=424242&k=3")
        _post_json(server, "/recommend_from_history", {"item_ids": [1, 987654321], "k": 3})
    lines = [record.getMessage() for record in caplog.records if record.name == "recx.serving.http"]
    assert len(lines) == 2
    assert lines[0].startswith("404 GET /recommend?user_id=424242&k=3: unknown user id 424242: ")
    assert lines[1].startswith('404 POST /recommend_from_history item_ids=[1, 987654321] {"k": 3}: unknown item id(s) [987654321]')


def test_concurrent_requests(server: RetrievalServer, retriever: Retriever) -> None:
    """Eight client threads get the same results as serial Retriever calls."""
    users = retriever.user_ids.ids.tolist()
    expected = {user: retriever.recommend(user, 5)[0].tolist() for user in users}
    answers: dict[Any, list[Any]] = {}
    lock = threading.Lock()

    def query(chunk: list[Any]) -> None:
        for user in chunk:
            _, body, _ = _request(server, "GET", f"/recommend?user_id={user}&k=5")
            with lock:
                answers[user] = body["item_ids"]

    threads = [threading.Thread(target=query, args=(users[start::8],)) for start in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == expected


def test_cli_serve_and_sigterm(bundle: Path, retriever: Retriever) -> None:
    """`recx serve --port 0` prints its URL, serves queries and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "recx.cli.main", "serve", "--bundle", str(bundle), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+) ", line)
        assert match, line
        connection = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        connection.request("GET", "/recommend?user_id=1&k=3")
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["item_ids"] == retriever.recommend(1, 3)[0].tolist()
        connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "received SIGTERM, stopping the server" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_cli_serve_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recx serve` on a folder that is not a bundle exits with status 2 and the fix."""
    from recx.cli.main import main

    assert main(["serve", "--bundle", str(tmp_path / "absent"), "--port", "0", "-q"]) == 2
    assert f"recx serve: error: serving bundle not found: {tmp_path / 'absent'} is not a folder." in capsys.readouterr().err
