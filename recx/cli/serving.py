"""The `recx export` and `recx serve` commands: write a serving bundle and serve it over HTTP.

`recx serve` imports neither torch nor TorchRec, so it starts quickly and
runs where only numpy, FAISS and onnxruntime are installed.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

from recx.cli.arguments import positive_int

logger = logging.getLogger("recx.cli")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from error
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value}")
    return value


def add_serving_parsers(commands: argparse._SubParsersAction, add_logging_options: Any) -> None:
    """Add the `export` and `serve` subcommands to the `recx` parser."""
    from recx.serving.bundle import CHECK_USERS, ONNX_TOLERANCE
    from recx.serving.http import MAX_BODY_BYTES

    export = commands.add_parser(
        "export",
        help="write a run's model as a serving bundle that loads without torch",
        description=(
            "Write a trained run as a serving bundle: the FAISS item index, id maps, item titles, user and item embeddings, "
            "user histories and the user tower in ONNX, with a manifest of checksums. The ONNX tower is checked against the "
            "TorchRec tower on real users before anything is written."
        ),
    )
    export.add_argument("run", type=Path, help="run folder written by `recx train` (or TwoTowerRecommender.save)")
    export.add_argument("--output", type=Path, required=True, help="bundle folder to write; must be new, empty, or an older bundle, which is replaced")
    export.add_argument("--tolerance", type=float, default=ONNX_TOLERANCE, help=f"largest allowed ONNX vs TorchRec difference on unit-length user embeddings (default {ONNX_TOLERANCE:g})")
    export.add_argument("--check-users", type=positive_int, default=CHECK_USERS, help=f"number of users compared in that check (default {CHECK_USERS})")
    add_logging_options(export)
    export.set_defaults(handler=_run_export)

    serve = commands.add_parser(
        "serve",
        help="serve a bundle's recommendations as JSON over HTTP",
        description=(
            "Serve GET /recommend?user_id=ID&k=N, POST /recommend_from_history with {\"item_ids\": [...], \"k\": N}, "
            "GET /similar_items?item_id=ID&k=N and GET /health. Stops on SIGINT or SIGTERM after requests in progress finish. "
            "There is no authentication: keep the default loopback address unless a proxy guards the port."
        ),
    )
    serve.add_argument("--bundle", type=Path, required=True, help="bundle folder written by `recx export`")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 picks a free port, printed at start)")
    serve.add_argument("--max-body-bytes", type=positive_int, default=MAX_BODY_BYTES, help=f"largest accepted request body in bytes (default {MAX_BODY_BYTES})")
    add_logging_options(serve)
    serve.set_defaults(handler=_run_serve)


def _run_export(args: argparse.Namespace) -> int:
    from recx.serving.export import export_bundle

    folder = export_bundle(args.run, args.output, tolerance=args.tolerance, check_users=args.check_users)
    print(f"Wrote serving bundle {folder}/ from run {args.run}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from recx.serving.http import serve
    from recx.serving.retriever import Retriever

    if not _is_loopback(args.host):
        logger.warning("listening on %s, which is not a loopback address: the server has no authentication, so anyone who can reach the port can query it", args.host)
    retriever = Retriever.load(args.bundle)

    def announce(server: Any) -> None:
        # One line on stdout, so scripts that start with --port 0 can read the port.
        print(f"recx serve: listening on {server.url} (bundle {args.bundle}, {retriever.n_items} items, {retriever.n_users} users)", flush=True)

    serve(retriever, args.host, args.port, max_body_bytes=args.max_body_bytes, on_ready=announce)
    return 0


def _is_loopback(host: str) -> bool:
    """Return whether ``host`` names only loopback addresses (127.0.0.0/8, ::1 or a name that resolves to them)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)
