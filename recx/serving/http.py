"""A JSON HTTP endpoint over a :class:`~recx.serving.Retriever`, on the standard library's HTTP server.

Endpoints (all responses are JSON objects):

- ``GET /health``: bundle summary.
- ``GET /recommend?user_id=ID&k=10&exclude_seen=true``
- ``POST /recommend_from_history`` with ``{"item_ids": [...], "k": 10}`` and
  optionally ``"exclude_history"``, ``"ignore_unknown"`` and ``"user_id"``.
- ``GET /similar_items?item_id=ID&k=10``

Results are ``{"item_ids": [...], "scores": [...]}`` (plus ``"titles"`` when
the bundle has titles). Errors are ``{"error": message}`` with status 400
(invalid input), 404 (unknown id or path), 405 (wrong method), 411 (POST
without Content-Length), 413 (body too large) or 500 (unexpected failure).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import recx
from recx.serving.errors import UnknownIdError

if TYPE_CHECKING:
    from recx.serving.retriever import Retriever

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_K", "MAX_BODY_BYTES", "RetrievalServer", "create_server", "serve"]

#: Number of items returned when a request gives no ``k``.
DEFAULT_K = 10

#: Largest accepted request body, in bytes. A history of 10,000 ids of 20 characters fits in about 240 KB.
MAX_BODY_BYTES = 1 << 20

#: Seconds a connection may stay idle while a request is read, so that slow clients cannot hold threads forever.
REQUEST_TIMEOUT_SECONDS = 30

#: Largest number of bytes, and seconds, read and discarded after an error that left a request unread (an
#: oversized body, too many headers). Closing a socket with unread input makes the kernel send a TCP reset,
#: which can discard the error response before the client reads it.
DRAIN_MAX_BYTES = 1 << 20
DRAIN_TIMEOUT_SECONDS = 2.0

#: Connections the kernel queues before the server accepts them. socketserver's default of 5 is too short
#: for a burst: on a loopback test with 16 concurrent clients, some connections beyond it were reset.
LISTEN_BACKLOG = 128

# Method each path accepts, and the query parameters or body keys it reads.
_ROUTES: dict[str, str] = {"/health": "GET", "/recommend": "GET", "/similar_items": "GET", "/recommend_from_history": "POST"}
_QUERY_PARAMETERS: dict[str, tuple[str, ...]] = {"/health": (), "/recommend": ("user_id", "k", "exclude_seen"), "/similar_items": ("item_id", "k")}
_BODY_KEYS: tuple[str, ...] = ("item_ids", "k", "exclude_history", "ignore_unknown", "user_id")
_TRUE_TEXT = ("true", "1", "yes")
_FALSE_TEXT = ("false", "0", "no")


class RequestError(Exception):
    """An invalid request, sent back as a JSON error with ``status``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RetrievalServer(ThreadingHTTPServer):
    """Threaded HTTP server that serves retrieval requests from one :class:`Retriever`.

    Each request runs in its own thread. Request threads are not daemons and
    ``server_close`` waits for them, so requests in progress finish on shutdown.

    NOTE: the number of request threads is not capped. Put a reverse proxy
    with connection limits in front of the server when it faces many clients.
    """

    daemon_threads = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], retriever: Retriever, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.retriever = retriever
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _RetrievalHandler)

    @property
    def url(self) -> str:
        """Base URL of the bound address, such as ``http://127.0.0.1:8000``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def create_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 0, *, max_body_bytes: int = MAX_BODY_BYTES) -> RetrievalServer:
    """Bind a :class:`RetrievalServer` to ``host:port`` (port 0 picks a free port); call ``serve_forever`` to run it."""
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes <= 0:
        raise ValueError(f"max_body_bytes must be a positive integer, got {max_body_bytes!r}.")
    try:
        return RetrievalServer((host, port), retriever, max_body_bytes=max_body_bytes)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen on {host}:{port}: {error.strerror}. Choose another --port, or --port 0 for a free one.") from error


def serve(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000, *, max_body_bytes: int = MAX_BODY_BYTES, on_ready: Callable[[RetrievalServer], None] | None = None) -> None:
    """Serve ``retriever`` until SIGINT or SIGTERM, then finish requests in progress and return.

    Must run in the main thread, where Python delivers signals. ``on_ready``,
    if given, is called with the server once it listens (the command line
    prints the URL there).
    """
    server = create_server(retriever, host, port, max_body_bytes=max_body_bytes)

    def request_stop(signum: int, frame: Any) -> None:
        logger.info("received %s, stopping the server", signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return, so it cannot run in
        # the thread that is inside serve_forever (this one).
        threading.Thread(target=server.shutdown, name="recx-serve-shutdown", daemon=True).start()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        logger.info("serving bundle %s on %s", retriever.path, server.url)
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logger.info("server on %s stopped", server.url)


class _RetrievalHandler(BaseHTTPRequestHandler):
    """Route requests to the retriever and turn its errors into JSON responses."""

    server: RetrievalServer
    server_version = f"recx/{recx.__version__}"
    timeout = REQUEST_TIMEOUT_SECONDS
    # Set when the request may not have been read to its end; finish() then drains the connection.
    _input_left_unread = False

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to the package logger at debug level instead of stderr; errors get their own warning line.
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Send errors that the standard library finds before routing (bad request line, too many headers) as JSON too."""
        status = HTTPStatus(code)
        text = message or status.phrase
        self._input_left_unread = True
        logger.warning("%d %s: %s", code, getattr(self, "requestline", "") or "(no request line)", text)
        data = json.dumps({"error": f"{text}. {explain or status.description}."}, ensure_ascii=False).encode("utf-8")
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def finish(self) -> None:
        super().finish()
        if self._input_left_unread:
            _drain(self.connection)

    # ------------------------------------------------------------- dispatch

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        route = parts.path
        # What the error log line shows of the request: the query string, or a summary of a POST body.
        details = f"?{parts.query}" if parts.query else ""
        try:
            if route not in _ROUTES:
                raise RequestError(HTTPStatus.NOT_FOUND, f"unknown path {route!r}. Endpoints: {', '.join(f'{verb} {path}' for path, verb in _ROUTES.items())}.")
            if method != _ROUTES[route]:
                raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{route} accepts {_ROUTES[route]}, not {method}.")
            if method == "POST":
                body = self._read_json_body()
                details = f" {_summarise_body(body)}"
                payload = self._answer_post(route, body)
            else:
                payload = self._answer_get(route, _parse_query(parts.query, _QUERY_PARAMETERS[route]))
            self._send(HTTPStatus.OK, payload)
        except RequestError as error:
            self._send_error(error.status, error.message, method, route, details)
        except UnknownIdError as error:
            self._send_error(HTTPStatus.NOT_FOUND, str(error), method, route, details)
        except (ValueError, TypeError) as error:
            self._send_error(HTTPStatus.BAD_REQUEST, str(error), method, route, details)
        except Exception:
            logger.exception("500 %s %s%s: unexpected error", method, route, details)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal server error; the server log has the details."})

    def _answer_get(self, route: str, query: dict[str, str]) -> dict[str, Any]:
        retriever = self.server.retriever
        if route == "/health":
            return {
                "status": "ok",
                "recx_version": recx.__version__,
                "bundle_format_version": retriever.manifest["format_version"],
                "n_users": retriever.n_users,
                "n_items": retriever.n_items,
                "dimension": retriever.dimension,
                "uses_history": retriever.uses_history,
                "uses_user_id": retriever.uses_user_id,
            }
        k = _parse_k(query.get("k"))
        if route == "/recommend":
            user_id = _require(query, "user_id")
            exclude_seen = _parse_bool(query.get("exclude_seen", "true"), "exclude_seen")
            item_ids, scores = retriever.recommend(user_id, k, exclude_seen=exclude_seen)
            return {"user_id": _json_id(user_id, retriever.user_ids.kind), **self._results(item_ids, scores)}
        item_id = _require(query, "item_id")
        item_ids, scores = retriever.similar_items(item_id, k)
        return {"item_id": _json_id(item_id, retriever.item_ids.kind), **self._results(item_ids, scores)}

    def _answer_post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(body) - set(_BODY_KEYS))
        if unknown:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown key(s) {unknown} in the request body; accepted keys are {list(_BODY_KEYS)}.")
        if "item_ids" not in body:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'missing key "item_ids": send {"item_ids": [...], "k": 10}.')
        item_ids = body["item_ids"]
        if not isinstance(item_ids, list):
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"item_ids" must be a JSON array of item ids, got {type(item_ids).__name__}.')
        k = body.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int):
            raise RequestError(HTTPStatus.BAD_REQUEST, f'"k" must be an integer, got {json.dumps(k)}.')
        flags = {}
        for key in ("exclude_history", "ignore_unknown"):
            value = body.get(key, key == "exclude_history")
            if not isinstance(value, bool):
                raise RequestError(HTTPStatus.BAD_REQUEST, f'"{key}" must be true or false, got {json.dumps(value)}.')
            flags[key] = value
        found_ids, scores = self.server.retriever.recommend_from_history(item_ids, k, user_id=body.get("user_id"), **flags)
        return self._results(found_ids, scores)

    def _results(self, item_ids: Any, scores: Any) -> dict[str, Any]:
        listed = item_ids.tolist()
        payload: dict[str, Any] = {"item_ids": listed, "scores": [float(score) for score in scores.tolist()]}
        titles = self.server.retriever.titles(listed)
        if titles is not None:
            payload["titles"] = titles
        return payload

    # ------------------------------------------------------------- reading and writing

    def _read_json_body(self) -> dict[str, Any]:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request has no Content-Length header. Send the JSON body with its length.")
        try:
            length = int(length_text)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length header {length_text!r}: expected a number of bytes.") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid Content-Length header {length_text!r}: expected a number of bytes.")
        if length > self.server.max_body_bytes:
            # The body stays unread, so the connection must not be reused.
            self.close_connection = True
            self._input_left_unread = True
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request body has {length} bytes, more than the limit of {self.server.max_body_bytes}. Send a shorter history.")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the request body is not valid UTF-8 JSON ({error}).") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the request body must be a JSON object, got {type(body).__name__}.")
        return body

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", _ROUTES.get(urlsplit(self.path).path, "GET"))
        self.end_headers()
        # A response to HEAD has headers only.
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, status: HTTPStatus, message: str, method: str, route: str, details: str) -> None:
        logger.warning("%d %s %s%s: %s", status.value, method, route, details, message)
        self._send(status, {"error": message})


def _drain(connection: socket.socket) -> None:
    """Half-close ``connection`` and discard what the client still sends, up to DRAIN_MAX_BYTES and DRAIN_TIMEOUT_SECONDS."""
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(DRAIN_TIMEOUT_SECONDS)
        received = 0
        while received < DRAIN_MAX_BYTES:
            chunk = connection.recv(1 << 16)
            if not chunk:
                return
            received += len(chunk)
    except OSError:
        # The client has gone or stays silent: the response is already sent.
        return


def _parse_query(query: str, accepted: tuple[str, ...]) -> dict[str, str]:
    """Return the query parameters as single strings, rejecting unknown and repeated ones."""
    try:
        values = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=len(accepted) + 1)
    except ValueError as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"invalid query string {query!r} ({error}).") from None
    unknown = sorted(set(values) - set(accepted))
    if unknown:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown query parameter(s) {unknown}; this endpoint accepts {list(accepted)}.")
    repeated = sorted(name for name, given in values.items() if len(given) > 1)
    if repeated:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"query parameter(s) {repeated} given more than once; pass each once.")
    return {name: given[0] for name, given in values.items()}


def _require(query: dict[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"missing query parameter {name!r}: pass ?{name}=ID.")
    return value


def _parse_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_K
    try:
        return int(text)
    except ValueError:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"k must be an integer, got {text!r}. Pass for example k=10.") from None


def _parse_bool(text: str, name: str) -> bool:
    if text.lower() in _TRUE_TEXT:
        return True
    if text.lower() in _FALSE_TEXT:
        return False
    raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be true or false, got {text!r}.")


def _json_id(text: str, kind: str) -> Any:
    """Return an id from a query string as the bundle types it: an int for integer ids."""
    return int(text) if kind == "int" else text


def _summarise_body(body: dict[str, Any]) -> str:
    """Describe a request body for an error log line, with at most 10 item ids."""
    item_ids = body.get("item_ids")
    shown = item_ids[:10] if isinstance(item_ids, list) else item_ids
    extra = f" (+{len(item_ids) - 10} more)" if isinstance(item_ids, list) and len(item_ids) > 10 else ""
    others = {key: value for key, value in body.items() if key != "item_ids"}
    return f"item_ids={json.dumps(shown, default=str)[:300]}{extra} {json.dumps(others, default=str)[:200]}"

