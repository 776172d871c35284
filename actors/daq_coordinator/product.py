"""The data product writer (OCM's `daqDpmMerge`): one multi-extension FITS file from the sources' results.

Pure and blocking: the coordinator runs `write_product` in a worker thread; nothing here touches asyncio.
astropy and numpy are imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stationd.protocol.daq import FitsKeyword, SourceResult

from .keywords import RESERVED_KEYWORDS, KeywordError, card_identity, keyword_card
from .records import sync_directory

if TYPE_CHECKING:
    import numpy as np
    from astropy.io.fits import BinTableHDU, Card

__all__ = ["ProductError", "ProductInfo", "write_product"]

_PRODUCT_MODE = 0o644  # mkstemp creates 0600; a data product is meant to be read by archivers and users
_USER = "user keywords"
# dtypes whose bytes, once big-endian, are exactly FITS's binary-table layout (D, E, M, C, K, J, I, B): the
# table is handed to astropy as is, so writing and checksumming need no per-column conversion (2x faster).
_DIRECT_DTYPES = frozenset({"f8", "f4", "c16", "c8", "i8", "i4", "i2", "u1"})


class ProductError(ValueError):
    """The sources' results cannot make a valid product (columns of different lengths, an unsupported column
    type, two sources with one name); nothing was written."""


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """What `write_product` wrote."""

    path: Path
    size: int
    """Bytes of the file."""
    extensions: int
    """Binary-table extensions (one per primary source that declared columns)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows written per primary source (0 for a source without columns)."""
    skipped: tuple[str, ...] = ()
    """What was left out, and why (`source dcs: valueKeyword NAXIS is a FITS structure keyword ...`)."""


def write_product(
    path: Path,
    *,
    file_id: str,
    orig_file: str,
    user_keywords: Sequence[FitsKeyword],
    primary: Sequence[tuple[str, SourceResult]],
    metadata: Sequence[tuple[str, SourceResult]] = (),
    now: datetime | None = None,
) -> ProductInfo:
    """Write the data product of one DAQ to `path`, atomically.

    The file has an empty primary HDU and one binary table per primary source that declared columns
    (`EXTNAME` = the source's name; zero rows when it recorded none). Metadata sources contribute keywords
    only; columns they send are left out and reported in `ProductInfo.skipped`.

    Primary-HDU keywords (OCM §8.1, §8.2: the order of the sources is the merge priority, descending):
    cards come in merge order — primary sources as given, then metadata sources, then the user keywords.
    When a keyword (same header name: `OBJECT`, `ESO OBS TPLNO`) comes twice, one card is written at its
    first position, holding the value of the highest-priority origin: user keywords beat every source (our
    choice: they are the operator's explicit word, and the spec does not rank them against the sources), and
    an earlier source beats a later one; within one list the later value wins (UpdateKeywords). A literal
    `NAME = value` card counts as keyword `NAME`. Commentary cards (`COMMENT`,
    `HISTORY`, blank) are all kept. A keyword that cannot be written (a structure keyword, a card longer
    than 80 characters) is left out and reported in `skipped`, so one bad source keyword never loses the
    data. Then `ARCFILE` (`<file_id>.fits`), `ORIGFILE` and `DATE` (UTC time of the merge) are set last,
    replacing any value from sources or users, and `CHECKSUM`/`DATASUM` are written on every HDU.

    The file is written under a temporary name in the same directory, flushed to disk, then renamed over
    `path` (an existing file there is replaced): a crash never leaves half a product under the final name.

    Args:
        path: the product's final path.
        file_id: the archive file id; `ARCFILE` is `<file_id>.fits`.
        orig_file: the value of `ORIGFILE`.
        user_keywords: the DAQ's user keywords.
        primary: `(source name, result)` of each primary source, in the order given at StartDaq.
        metadata: `(source name, result)` of each metadata source, in the order given at StartDaq.
        now: the merge time written as `DATE` (default: the current time; converted to UTC).

    Raises:
        ProductError: a table cannot be written (columns of different lengths, not 1-d, unsupported type,
            bad column names) or two sources share a name; no file is left behind.
        OSError: the file could not be written; no file is left behind.
    """
    from astropy.io import fits

    names = [name for name, _ in (*primary, *metadata)]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ProductError(f"sources named more than once: {', '.join(duplicates)}")

    skipped: list[str] = []
    rows: dict[str, int] = {}
    tables: list[BinTableHDU] = []
    for name, result in primary:
        rows[name] = 0
        if result.columns:
            table, rows[name] = _table(name, result.columns)
            tables.append(table)
    for name, result in metadata:
        if result.columns:
            skipped.append(f"source {name}: columns of a metadata source are not written")

    head = fits.PrimaryHDU()
    origins = [(f"source {name}", result.keywords) for name, result in (*primary, *metadata)]
    for card in _merged_cards(origins, user_keywords, skipped):
        head.header.append(card, end=True)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    reserved = [
        ("ARCFILE", f"{file_id}.fits", "Archive File Name"),
        ("ORIGFILE", orig_file, "Original File Name"),
        ("DATE", stamp.isoformat(timespec="milliseconds"), "Date the file was written (UTC)"),
        # Placeholders, so that the checksums come last: astropy fills them in where they stand.
        ("CHECKSUM", "0" * 16, "HDU checksum"),
        ("DATASUM", "0", "data unit checksum"),
    ]
    try:
        for card in reserved:
            head.header.append(card, end=True)
    except ValueError as exc:
        raise ProductError(f"cannot write the reserved keywords: {exc}") from exc

    hdul = fits.HDUList([head, *tables])
    _write_atomically(path, hdul)
    return ProductInfo(
        path=path,
        size=path.stat().st_size,
        extensions=len(tables),
        rows=rows,
        skipped=tuple(skipped),
    )


def _merged_cards(
    sources: list[tuple[str, Sequence[FitsKeyword]]], user: Sequence[FitsKeyword], skipped: list[str]
) -> list[Card]:
    """The primary-HDU cards, laid out in merge order (sources, then user keywords); on the same header name
    the user keywords win, then the earlier source (see `write_product`)."""
    cards: list[Card] = []
    held: dict[str, tuple[int, int]] = {}  # header name -> (index in cards, rank of its origin; 0 = highest)
    for rank, (origin, keywords) in [(i + 1, s) for i, s in enumerate(sources)] + [(0, (_USER, user))]:
        for keyword in keywords:
            try:
                card = keyword_card(keyword)
            except KeywordError as exc:
                skipped.append(f"{origin}: {exc}")
                continue
            identity = card_identity(card)
            if identity is None:
                cards.append(card)
            elif identity in RESERVED_KEYWORDS:
                continue  # set by the writer, whatever a source or user said (OCM §8.4)
            elif identity not in held:
                held[identity] = (len(cards), rank)
                cards.append(card)
            elif rank <= held[identity][1]:  # equal rank: a later value of the same list wins
                index = held[identity][0]
                cards[index] = card
                held[identity] = (index, rank)
    return cards


def _table(source: str, columns: dict[str, Any]) -> tuple[BinTableHDU, int]:
    """One binary table from a source's columns, built with whole-array copies (no per-row work)."""
    import numpy as np
    from astropy.io import fits

    arrays: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if not isinstance(name, str) or not name.strip() or not name.isascii() or not name.isprintable():
            raise ProductError(f"source {source}: column name {name!r} is not a printable ASCII name")
        array = np.asarray(values)
        if array.ndim != 1:
            raise ProductError(f"source {source}: column {name} is not 1-d (shape {array.shape})")
        if array.dtype.kind not in "biufcSU":
            raise ProductError(f"source {source}: column {name} has an unsupported type ({array.dtype})")
        arrays[name] = array
    folded = [name.upper() for name in arrays]
    if len(set(folded)) != len(folded):
        raise ProductError(f"source {source}: column names differ only in case (FITS ignores case)")
    lengths = {len(array) for array in arrays.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{name}={len(array)}" for name, array in arrays.items())
        raise ProductError(f"source {source}: columns have different lengths ({detail})")
    rows = lengths.pop()

    direct = all(_direct(array.dtype) for array in arrays.values())
    layout = [
        (name, array.dtype.newbyteorder(">") if direct else array.dtype) for name, array in arrays.items()
    ]
    try:
        record = np.empty(rows, dtype=layout)
        for name, array in arrays.items():
            record[name] = array
        # A big-endian FITS_rec is already the bytes FITS stores: astropy writes it without converting.
        # Other tables (strings, logicals, unsigned integers) go through astropy's own conversion.
        data = record.view(fits.FITS_rec) if direct else record
        return fits.BinTableHDU(data=data, name=source), rows
    except (ValueError, TypeError, UnicodeError) as exc:
        raise ProductError(f"source {source}: cannot write its table: {exc}") from exc


def _direct(dtype: np.dtype) -> bool:
    return f"{dtype.kind}{dtype.itemsize}" in _DIRECT_DTYPES


def _write_atomically(path: Path, hdul: Any) -> None:
    """Write to a temporary file next to `path`, flush it to disk, then rename it to `path`."""
    from astropy.io import fits

    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), _PRODUCT_MODE)
            try:
                hdul.writeto(stream, checksum=True)
            except (ValueError, fits.VerifyError) as exc:
                raise ProductError(f"astropy refused the product: {exc}") from exc
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_directory(path.parent)
