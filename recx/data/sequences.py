"""Read per-user item sequences, one user per line, as in the S3-Rec benchmark files.

The format is plain text, one user per line::

    user_id item_1 item_2 ... item_n

with space-separated integer ids and the items in interaction order, oldest
first. The S3-Rec release of Amazon Beauty and Sports and Outdoors (Zhou
et al., "S3-Rec: Self-Supervised Learning for Sequential Recommendation
with Mutual Information Maximization", CIKM 2020) uses it. Those files
carry no times, so :func:`read_sequences` stores each item's position in
its sequence as the timestamp, and :func:`~recx.data.leave_one_out` then
holds out the last item of each line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from recx.data.interactions import Interactions

logger = logging.getLogger(__name__)

__all__ = ["read_sequences"]


def read_sequences(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> Interactions:
    """Read a file of per-user item sequences into interactions.

    Parameters
    ----------
    path : str or os.PathLike
        Text file with one line per user: the user id, then that user's
        item ids in interaction order, all integers separated by spaces.
        Blank lines are skipped.
    encoding : str, default="utf-8"

    Returns
    -------
    Interactions
        Weight 1 per (user, item) pair, integer ids, and as timestamps the
        0-based position of the item in its line (float64). An item
        repeated within a line is stored once, at its last position.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        If a line contains a token that is not an integer, has a user id and
        no items, or repeats a user id, or the file has no sequences.
    """
    file = Path(path)
    if not file.is_file():
        hint = " It is a folder: pass the sequence file inside it, for example Beauty.txt." if file.is_dir() else ""
        raise FileNotFoundError(f"sequence file not found: {file}.{hint}")

    users: list[int] = []
    lengths: list[int] = []
    items: list[np.ndarray] = []
    with open(file, encoding=encoding) as stream:
        for line_number, line in enumerate(stream, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                values = np.array([int(token) for token in tokens], dtype=np.int64)
            except ValueError as error:
                raise ValueError(f"{file}, line {line_number}: expected space-separated integer ids (user id, then items), got {line.strip()[:80]!r}.") from error
            if len(values) < 2:
                raise ValueError(f"{file}, line {line_number}: user {values[0]} has no items. Each line needs the user id followed by at least one item id.")
            users.append(int(values[0]))
            lengths.append(len(values) - 1)
            items.append(values[1:])
    if not users:
        raise ValueError(f"{file} contains no sequences: every line is blank. Check the path.")
    distinct_users, counts = np.unique(np.asarray(users), return_counts=True)
    if (counts > 1).any():
        repeated = distinct_users[counts > 1][:3].tolist()
        raise ValueError(f"{file} lists user ids {repeated} on more than one line. Each user needs exactly one line holding the whole sequence.")

    length_array = np.asarray(lengths, dtype=np.int64)
    frame = pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=np.int64), length_array),
            "item_id": np.concatenate(items),
            # Position within the line, 0 for the oldest item.
            "timestamp": np.concatenate([np.arange(n, dtype=np.float64) for n in lengths]),
        }
    )
    interactions = Interactions.from_dataframe(frame, timestamp_col="timestamp", duplicates="last")
    logger.info("read %d sequences with %d interactions over %d items from %s", interactions.n_users, interactions.nnz, interactions.n_items, file)
    return interactions
