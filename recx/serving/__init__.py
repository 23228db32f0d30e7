"""Serving: export a trained model as a self-contained bundle and query it without torch.

- :func:`export_bundle` (needs the training stack) writes the bundle folder:
  the FAISS item index, id maps, embeddings, user histories and the user
  tower in ONNX, with a manifest of checksums.
- :class:`Retriever` (numpy, scipy, pandas, FAISS and onnxruntime, no torch) loads and checks a
  bundle and runs ``recommend``, ``recommend_from_history`` and
  ``similar_items``.
- :mod:`recx.serving.http` serves a Retriever as JSON over HTTP (``recx serve``).

Names load on first use, so importing this package imports neither torch nor
TorchRec, and only :func:`export_bundle` does.
"""

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "BUNDLE_FORMAT_VERSION": "recx.serving.bundle",
    "ONNX_TOLERANCE": "recx.serving.bundle",
    "read_manifest": "recx.serving.bundle",
    "BundleError": "recx.serving.errors",
    "UnknownIdError": "recx.serving.errors",
    "Retriever": "recx.serving.retriever",
    "export_bundle": "recx.serving.export",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recx.serving' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
