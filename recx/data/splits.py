"""Split protocols: train, validation and test parts of one set of interactions.

Every part keeps the input's id maps, shape and item metadata, so a model
trained on ``split.train`` scores the users and items of ``split.test``
by index. Each interaction of the input lands in exactly one part, and its
timestamp moves with it. The one exception is :func:`time_cut_split` with
``new_users="drop"``.

Per-user protocols (:func:`temporal_split`, :func:`leave_one_out`,
:func:`random_split`) hold out part of each user's own history:

- A user with n interactions holds out ``floor(n * fraction + 0.5)`` of them
  (rounding halves up), but at least 1 and at most n - 1. Every user with 2
  or more interactions therefore appears in test and keeps at least one
  training interaction. A user with fewer than 2 stays wholly in train.
- The validation part is carved out of the remaining training interactions
  by the same protocol, so ``validation_fraction`` is a fraction of what is
  left after the test holdout. The test part is the same with and without a
  validation part.

:func:`time_cut_split` splits at one global time instead, so no training
interaction is later than any test interaction.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recx.data.interactions import Interactions

logger = logging.getLogger(__name__)

NewUserPolicy = Literal["train", "drop"]

# A part selector returns a boolean mask of shape (nnz,) over the entries of
# its input, True for entries that go to the held-out part.
_Selector = Callable[[Interactions], np.ndarray]


@dataclass
class Split:
    """Train, test and optional validation parts of one dataset.

    The parts must share id maps and shape, and no (user, item) pair may
    appear in two parts. Construction raises ``ValueError`` otherwise.

    Attributes
    ----------
    train : Interactions
        Interactions to fit on.
    test : Interactions
        Held-out interactions to evaluate on, disjoint from ``train``.
    validation : Interactions or None
        Held-out interactions for model selection, disjoint from both.
    protocol : str
        Name of the protocol that produced the split, for example ``"temporal"``.
    params : dict
        The protocol's parameters, plus values it derived (such as the time
        cut chosen), for reports and reproduction.
    """

    train: Interactions
    test: Interactions
    validation: Interactions | None = None
    protocol: str = field(default="custom", kw_only=True)
    params: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __post_init__(self) -> None:
        parts = [("train", self.train), ("test", self.test)]
        if self.validation is not None:
            parts.append(("validation", self.validation))
        for name, part in parts[1:]:
            if part.matrix.shape != self.train.matrix.shape or part.users != self.train.users or part.items != self.train.items:
                raise ValueError(
                    f"split parts must share id maps and shape, but {name} is {part.n_users} x {part.n_items} and train is "
                    f"{self.train.n_users} x {self.train.n_items} or their ids differ. Build parts with Interactions.with_entries."
                )

        # A pair in two parts leaks held-out interactions into training or model selection.
        for i, (first_name, first) in enumerate(parts):
            for second_name, second in parts[i + 1 :]:
                n_shared = _count_shared_pairs(first, second)
                if n_shared:
                    raise ValueError(f"{n_shared} (user, item) pairs appear in both {first_name} and {second_name}. Each interaction must be in one part only.")


# ---------------------------------------------------------------- protocols


def temporal_split(x: Interactions, test_fraction: float = 0.2, validation_fraction: float = 0.0) -> Split:
    """Hold out the latest interactions of each user.

    Parameters
    ----------
    x : Interactions
        Input with timestamps.
    test_fraction : float, default=0.2
        Fraction of each user's interactions, the latest by timestamp, that
        goes to test. Rounding and per-user limits are described in the
        module documentation. Ties in time are broken by item index, so the
        split is deterministic.
    validation_fraction : float, default=0.0
        Fraction of each user's remaining interactions, the latest, that goes
        to validation. 0 means no validation part.

    Returns
    -------
    Split
        For each user, every test timestamp is at or after every validation
        timestamp, which is at or after every train timestamp.

    Raises
    ------
    ValueError
        If ``x`` has no timestamps, a fraction is out of range, or no user
        has enough interactions to hold one out.

    Examples
    --------
    A user with 10 interactions and ``test_fraction=0.2`` keeps the earliest
    8 in train, and the latest 2 go to test.
    """
    _require_timestamps(x, "temporal")
    _check_fraction(test_fraction, "test_fraction")
    _check_fraction(validation_fraction, "validation_fraction", allow_zero=True)
    test_selector = _latest_selector(lambda counts: _holdout_counts(counts, test_fraction), "temporal")
    validation_selector = _latest_selector(lambda counts: _holdout_counts(counts, validation_fraction), "temporal") if validation_fraction > 0 else None
    return _split_in_two_stages(x, test_selector, validation_selector, "temporal", {"test_fraction": test_fraction, "validation_fraction": validation_fraction})


def leave_one_out(x: Interactions, validation: bool = False) -> Split:
    """Hold out the latest interaction of each user, and the one before it for validation.

    Parameters
    ----------
    x : Interactions
        Input with timestamps.
    validation : bool, default=False
        Also hold out each user's second-latest interaction for validation.

    Returns
    -------
    Split
        Users with fewer than 2 interactions stay wholly in train. With
        ``validation=True``, a user with exactly 2 interactions has one in
        train and one in test but none in validation, so the test part does
        not depend on ``validation``. Ties in time are broken by item index.

    Raises
    ------
    ValueError
        If ``x`` has no timestamps or no user has 2 or more interactions.
    """
    _require_timestamps(x, "leave-one-out")
    selector = _latest_selector(_one_if_two_or_more, "leave-one-out")
    return _split_in_two_stages(x, selector, selector if validation else None, "leave-one-out", {"validation": bool(validation)})


def random_split(x: Interactions, test_fraction: float = 0.2, validation_fraction: float = 0.0, seed: int = 0) -> Split:
    """Hold out a random subset of each user's interactions.

    Parameters
    ----------
    x : Interactions
        Input; timestamps are optional and move with their interactions.
    test_fraction : float, default=0.2
        Fraction of each user's interactions drawn for test.
    validation_fraction : float, default=0.0
        Fraction of each user's remaining interactions drawn for validation.
        0 means no validation part.
    seed : int, default=0
        Seed of the draw. The same seed and input give the same split. The
        test draw and the validation draw use separate streams, so the test
        part does not depend on ``validation_fraction``.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        If a fraction is out of range or no user has 2 or more interactions.
    """
    _check_fraction(test_fraction, "test_fraction")
    _check_fraction(validation_fraction, "validation_fraction", allow_zero=True)
    test_stream, validation_stream = np.random.SeedSequence(seed).spawn(2)
    test_selector = _random_selector(lambda counts: _holdout_counts(counts, test_fraction), test_stream)
    validation_selector = _random_selector(lambda counts: _holdout_counts(counts, validation_fraction), validation_stream) if validation_fraction > 0 else None
    params = {"test_fraction": test_fraction, "validation_fraction": validation_fraction, "seed": seed}
    return _split_in_two_stages(x, test_selector, validation_selector, "random", params)


def time_cut_split(
    x: Interactions,
    cut: float | str | pd.Timestamp | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.0,
    *,
    validation_cut: float | str | pd.Timestamp | None = None,
    new_users: NewUserPolicy = "train",
) -> Split:
    """Split at one global time: interactions at or after the cut go to test.

    The test part contains the interactions at or after ``cut`` of users who also have
    interactions before it. A user whose first interaction is at or after
    the cut has no history to recommend from, so none of their interactions
    go to test. ``new_users`` decides whether they go to train or are dropped.

    Parameters
    ----------
    x : Interactions
        Input with timestamps.
    cut : float, str, pandas.Timestamp or None, default=None
        Time of the cut: seconds since the epoch, or a date that
        ``pandas.Timestamp`` accepts (naive dates are read as UTC). None
        places it at the ``1 - test_fraction`` quantile of all timestamps.
    test_fraction : float, default=0.2
        Share of interactions after the cut when ``cut`` is None; ignored
        otherwise. Fewer interactions reach test than this share when some
        belong to new users.
    validation_fraction : float, default=0.0
        Places a second cut at the ``1 - validation_fraction`` quantile of
        the training timestamps before ``cut``, applied to the training part
        in the same way. 0 means no validation part unless ``validation_cut``
        is given.
    validation_cut : float, str, pandas.Timestamp or None, default=None
        Explicit time of the second cut, earlier than ``cut``. Overrides
        ``validation_fraction``.
    new_users : {"train", "drop"}, default="train"
        What happens to interactions of users with no interaction before the
        cut. ``"train"`` keeps them in train, so the parts add up to the
        input, but train then contains events from the test period. ``"drop"``
        removes them from every part, so no training interaction is at or
        after the cut. The number dropped is stored in ``params["n_dropped"]``.

    Returns
    -------
    Split
        ``params`` contains the cuts used (``"cut"``, ``"validation_cut"``) in
        seconds since the epoch.

    Raises
    ------
    ValueError
        If ``x`` has no timestamps, a fraction or cut is invalid, or the
        cut leaves no test interactions.
    """
    timestamps = _require_timestamps(x, "time-cut")
    _check_fraction(test_fraction, "test_fraction")
    _check_fraction(validation_fraction, "validation_fraction", allow_zero=True)
    if new_users not in ("train", "drop"):
        raise ValueError(f"invalid new_users {new_users!r}: expected 'train' (keep their interactions in train) or 'drop'.")

    test_cut = float(np.quantile(timestamps, 1.0 - test_fraction)) if cut is None else _to_seconds(cut, "cut")
    second_cut: float | None = None
    if validation_cut is not None:
        second_cut = _to_seconds(validation_cut, "validation_cut")
        if second_cut >= test_cut:
            raise ValueError(f"validation_cut ({second_cut:.0f} s) must be earlier than cut ({test_cut:.0f} s). Choose an earlier validation_cut.")
    elif validation_fraction > 0:
        before_cut = timestamps[timestamps < test_cut]
        if len(before_cut):
            second_cut = float(np.quantile(before_cut, 1.0 - validation_fraction))

    # Stage 1: cut the input into train and test.
    test_mask, new_user_mask = _time_cut_masks(x, test_cut)
    if not test_mask.any():
        low, high = timestamps.min(), timestamps.max()
        raise ValueError(
            f"cut={test_cut:.0f} leaves no test interactions, because no user has interactions both before and at or after it "
            f"(timestamps range from {low:.0f} to {high:.0f} s). Choose a cut inside that range."
        )
    train_mask = ~test_mask & ~new_user_mask if new_users == "drop" else ~test_mask
    n_dropped = int(new_user_mask.sum()) if new_users == "drop" else 0
    train, test = _take(x, train_mask), _take(x, test_mask)

    # Stage 2: cut the training part again for validation.
    validation = None
    if second_cut is not None:
        validation_mask, new_in_train = _time_cut_masks(train, second_cut)
        if not validation_mask.any():
            raise ValueError(f"validation_cut={second_cut:.0f} leaves no validation interactions. Choose a later cut or a larger validation_fraction.")
        keep_mask = ~validation_mask & ~new_in_train if new_users == "drop" else ~validation_mask
        n_dropped += int(new_in_train.sum()) if new_users == "drop" else 0
        train, validation = _take(train, keep_mask), _take(train, validation_mask)

    params = {
        "cut": test_cut,
        "test_fraction": test_fraction,
        "validation_cut": second_cut,
        "validation_fraction": validation_fraction,
        "new_users": new_users,
        "n_dropped": n_dropped,
    }
    return _finish(x, train, test, validation, "time-cut", params)


# Protocol names accepted by split_interactions.
PROTOCOLS: dict[str, Callable[..., Split]] = {
    "temporal": temporal_split,
    "leave-one-out": leave_one_out,
    "random": random_split,
    "time-cut": time_cut_split,
}


def split_interactions(x: Interactions, protocol: str, **params: Any) -> Split:
    """Split ``x`` with the protocol called ``protocol``.

    Parameters
    ----------
    x : Interactions
        Input.
    protocol : {"temporal", "leave-one-out", "random", "time-cut"}
        Protocol name; underscores may replace the hyphens.
    **params
        Parameters of the protocol's function: :func:`temporal_split`,
        :func:`leave_one_out`, :func:`random_split` or :func:`time_cut_split`.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        If the protocol is unknown.
    TypeError
        If a parameter does not belong to the protocol.
    """
    name = protocol.replace("_", "-") if isinstance(protocol, str) else protocol
    if name not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}: expected one of {list(PROTOCOLS)}.")
    function = PROTOCOLS[name]
    accepted = list(inspect.signature(function).parameters)[1:]
    unknown = [key for key in params if key not in accepted]
    if unknown:
        raise TypeError(f"split protocol {name!r} has no parameter {unknown[0]!r}. Its parameters are {accepted}.")
    return function(x, **params)


# ------------------------------------------------------------------ checks


def _require_timestamps(x: Interactions, protocol: str) -> np.ndarray:
    """Return the timestamps of ``x``, raising if it has none."""
    if x.timestamps is None:
        raise ValueError(
            f"the {protocol} split needs timestamps, but these interactions have none. "
            f"Load them with timestamp_col=<column>, or use the 'random' protocol (random_split), which needs no times."
        )
    return x.timestamps


def _check_fraction(value: Any, name: str, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a real number in (0, 1), or [0, 1) with ``allow_zero``."""
    low = "0 (inclusive, 0 for none)" if allow_zero else "0"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value >= 1 or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a number between {low} and 1 (exclusive), got {value!r}. For example {name}=0.2 holds out 20%.")


def _to_seconds(value: Any, name: str) -> float:
    """Convert seconds since the epoch or a date to float seconds, reading naive dates as UTC."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    else:
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"invalid {name} {value!r}: expected seconds since the epoch or a date such as '2018-01-01'.") from error
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        seconds = stamp.timestamp()
    if not math.isfinite(seconds):
        raise ValueError(f"invalid {name} {value!r}: the time must be finite.")
    return seconds


# ---------------------------------------------------------------- selectors


def _count_shared_pairs(first: Interactions, second: Interactions) -> int:
    """Return the number of (user, item) pairs stored in both, counting zero-weight entries too."""
    first_pattern = sp.csr_matrix((np.ones(first.nnz, dtype=np.float32), first.matrix.indices, first.matrix.indptr), shape=first.matrix.shape)
    second_pattern = sp.csr_matrix((np.ones(second.nnz, dtype=np.float32), second.matrix.indices, second.matrix.indptr), shape=second.matrix.shape)
    return int(first_pattern.multiply(second_pattern).nnz)


def _entry_rows(x: Interactions) -> np.ndarray:
    """Return the user index of each stored entry, shape (nnz,), int64."""
    return np.repeat(np.arange(x.n_users, dtype=np.int64), np.diff(x.matrix.indptr))


def _holdout_counts(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Return how many interactions each user holds out: round half up, within [1, n - 1], 0 below 2."""
    # The small epsilon rounds exact halves up when n * fraction lands just
    # below .5 in floating point (5 * 0.3 gives 1.4999999999999998).
    n_held_out = np.floor(counts * fraction + 0.5 + 1e-9).astype(np.int64)
    n_held_out = np.minimum(np.maximum(n_held_out, 1), counts - 1)
    n_held_out[counts < 2] = 0
    return n_held_out


def _one_if_two_or_more(counts: np.ndarray) -> np.ndarray:
    return (counts >= 2).astype(np.int64)


def _select_last_ranks(x: Interactions, ranks: np.ndarray, n_held_out: np.ndarray) -> np.ndarray:
    """Mark the entries whose rank within their user is among the last ``n_held_out[user]``."""
    rows = _entry_rows(x)
    counts = np.diff(x.matrix.indptr)
    return ranks >= (counts - n_held_out)[rows]


def _ranks_within_users(x: Interactions, keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """Return each entry's position (0-based) in its user's order by ``keys``, shape (nnz,), int64.

    ``keys`` are ordered as for ``np.lexsort``, with the last key as the primary one.
    """
    rows = _entry_rows(x)
    order = np.lexsort((*keys, rows))
    # Sorting by user first keeps each user's block where CSR has it, so
    # a position minus the block start is the rank within the user.
    ranks = np.empty(len(rows), dtype=np.int64)
    ranks[order] = np.arange(len(rows), dtype=np.int64) - x.matrix.indptr[rows[order]]
    return ranks


def _latest_selector(count_rule: Callable[[np.ndarray], np.ndarray], protocol: str) -> _Selector:
    """Return a selector of each user's latest interactions, ties broken by item index."""

    def select(x: Interactions) -> np.ndarray:
        timestamps = _require_timestamps(x, protocol)
        ranks = _ranks_within_users(x, (x.matrix.indices, timestamps))
        return _select_last_ranks(x, ranks, count_rule(np.diff(x.matrix.indptr)))

    return select


def _random_selector(count_rule: Callable[[np.ndarray], np.ndarray], stream: np.random.SeedSequence) -> _Selector:
    """Return a selector of random interactions per user, drawn from ``stream``."""

    def select(x: Interactions) -> np.ndarray:
        keys = np.random.default_rng(stream).random(x.nnz)
        ranks = _ranks_within_users(x, (keys,))
        return _select_last_ranks(x, ranks, count_rule(np.diff(x.matrix.indptr)))

    return select


def _time_cut_masks(x: Interactions, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (held-out mask, new-user mask) of shape (nnz,) for a global cut at ``cut`` seconds."""
    rows = _entry_rows(x)
    after = _require_timestamps(x, "time-cut") >= cut
    has_history = np.bincount(rows[~after], minlength=x.n_users) > 0
    return after & has_history[rows], after & ~has_history[rows]


# ---------------------------------------------------------------- assembly


def _take(x: Interactions, mask: np.ndarray) -> Interactions:
    """Return the entries of ``x`` where ``mask`` is True, with their timestamps."""
    rows = _entry_rows(x)[mask]
    indptr = np.zeros(x.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=x.n_users), out=indptr[1:])
    matrix = sp.csr_matrix((x.matrix.data[mask], x.matrix.indices[mask], indptr), shape=x.matrix.shape)
    timestamps = None if x.timestamps is None else x.timestamps[mask]
    return x.with_entries(matrix, timestamps)


def _split_in_two_stages(x: Interactions, test_selector: _Selector, validation_selector: _Selector | None, protocol: str, params: dict[str, Any]) -> Split:
    """Hold out test from ``x``, then validation from what remains, with the given selectors."""
    test_mask = test_selector(x)
    if not test_mask.any():
        raise ValueError(f"the {protocol} split found no test interactions, because no user has 2 or more interactions ({x.n_users} users, {x.nnz} interactions).")
    train, test = _take(x, ~test_mask), _take(x, test_mask)

    validation = None
    if validation_selector is not None:
        validation_mask = validation_selector(train)
        if not validation_mask.any():
            raise ValueError(f"the {protocol} split found no validation interactions, because no user has 2 or more training interactions after the test holdout. Split without validation.")
        train, validation = _take(train, ~validation_mask), _take(train, validation_mask)
    return _finish(x, train, test, validation, protocol, params)


def _finish(x: Interactions, train: Interactions, test: Interactions, validation: Interactions | None, protocol: str, params: dict[str, Any]) -> Split:
    split = Split(train, test, validation, protocol=protocol, params=params)
    logger.info(
        "%s split of %d interactions: train %d, validation %d, test %d (%d test users)",
        protocol,
        x.nnz,
        train.nnz,
        0 if validation is None else validation.nnz,
        test.nnz,
        int(np.count_nonzero(test.user_counts())),
    )
    return split
