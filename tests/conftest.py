"""Shared fixtures: the location of the real datasets and cached loads of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from recx.data import Interactions, load_dataset


def _repo_root() -> Path:
    """Return the folder that contains pyproject.toml, searching upward from this file."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml found above {Path(__file__).resolve()}. Run the tests from a recx checkout.")


SHARED_DATA = _repo_root().parent / "shared" / "data"


def shared_data_path(name: str) -> Path:
    """Return the folder ``name`` of the shared datasets, or skip the test if it is absent."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"dataset folder {folder} not found; place the {name} dataset there (next to the repository, in shared/data) to run this test.")
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Callable[[str], Path]:
    """Return a function that maps a dataset folder name (such as "ml-100k") to its path, skipping if absent."""
    return shared_data_path


@pytest.fixture(scope="session")
def movielens_small() -> Interactions:
    """The embedded MovieLens latest-small interactions, loaded once per test session."""
    return load_dataset("movielens-latest-small")
