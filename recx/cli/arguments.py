"""Argument types shared by the `recx` subcommands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """Parse a command-line value that must be an integer >= 1."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from error
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
