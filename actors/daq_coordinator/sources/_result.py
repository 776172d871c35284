"""Checks on what another process or actor hands over at stop: a bad table fails its source, not the merge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stationd.protocol.daq import SourceResult

if TYPE_CHECKING:
    import numpy as np

from .base import SourceFailed

__all__ = ["checked_result"]


def _column(name: str, values: Any) -> np.ndarray:
    import numpy as np  # here, not at the top: the daemon imports this module at start, numpy takes 0.1 s

    if isinstance(values, list):
        try:
            values = np.asarray(values)
        except ValueError as exc:  # ragged nested lists
            raise SourceFailed(f"column {name!r} is not a 1-d array ({exc})") from exc
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.hasobject:
        raise SourceFailed(f"column {name!r} is not a 1-d array of numbers, booleans or strings")
    return values


def checked_result(reply: object) -> SourceResult:
    """`reply` as a `SourceResult` whose columns are 1-d numpy arrays of one length (lists become arrays).

    Raises `SourceFailed` naming the problem for any other reply or table.
    """
    if not isinstance(reply, SourceResult):
        raise SourceFailed(f"expected a source_result reply to stop, got {type(reply).__name__}")
    columns = {name: _column(name, values) for name, values in reply.columns.items()}
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise SourceFailed(f"columns differ in length: {lengths}")
    return SourceResult(keywords=reply.keywords, columns=columns)
