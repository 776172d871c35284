"""OCM's FITS keyword JSON: parsing with readable errors, FITS card checks, and UpdateKeywords merging.

Every keyword must become exactly one 80-character FITS card: no `CONTINUE` long-string cards, no truncated
comments. Structure keywords (`SIMPLE`, `BITPIX`, `NAXIS`, `NAXISn`, `EXTEND`, `XTENSION`, `PCOUNT`,
`GCOUNT`, `TFIELDS`, `TFORMn`, `TTYPEn`, `TBCOLn`, `GROUPS`, `END`) are refused: the product writer sets
them. The reserved keywords `ARCFILE`, `ORIGFILE`, `DATE`, `CHECKSUM` and `DATASUM` are accepted, but the
product writer overwrites them (OCM §8.4), so a user value never reaches the product.

astropy is imported inside the functions: importing it takes longer than starting the daemon.
"""

from __future__ import annotations

import math
import re
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from stationd.protocol.daq import DaqProperties, EsoKeyword, FitsKeyword, LiteralKeyword, ValueKeyword
from stationd.protocol.errors import InvalidParams

if TYPE_CHECKING:
    from astropy.io.fits import Card

__all__ = [
    "RESERVED_KEYWORDS",
    "KeywordError",
    "card_identity",
    "keyword_card",
    "keyword_identity",
    "merge_keywords",
    "parse_keywords",
    "parse_properties",
]

RESERVED_KEYWORDS = frozenset({"ARCFILE", "ORIGFILE", "DATE", "CHECKSUM", "DATASUM"})
"""Accepted from users and sources, but always overwritten by the product writer."""

_STRUCTURE = re.compile(
    r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|TFIELDS|TFORM\d+|TTYPE\d+|TBCOL\d+|GROUPS|END)$"
)
# Keywords whose cards are commentary or continuation cards, not `NAME = value` cards.
_NOT_VALUE_CARDS = frozenset({"COMMENT", "HISTORY", "CONTINUE", "HIERARCH", ""})
_CARD_WIDTH = 80
_T = TypeVar("_T")
_PRINTABLE_ASCII = re.compile(r"^[ -~]*$")
_MSGSPEC_PATH = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
# warnings.catch_warnings swaps process-wide state: the event loop (parsing) and the product writer's
# worker thread must not interleave their checks, or one of them could miss astropy's warning.
_warnings_lock = threading.Lock()
_ASTROPY_FIX_HINT = re.compile(r",? *fix it first with \.verify\('fix'\)")


class KeywordError(ValueError):
    """A keyword cannot be written as one valid FITS card; the message says why."""


def keyword_identity(keyword: FitsKeyword) -> tuple[str, str] | None:
    """OCM's UpdateKeywords identity: `(kind, NAME)`; None for a literal keyword, which has no name."""
    match keyword:
        case ValueKeyword(name=name):
            return ("valueKeyword", name.upper())
        case EsoKeyword(name=name):
            return ("esoKeyword", name.upper())
        case LiteralKeyword():
            return None
        case _:
            raise TypeError(f"not a FITS keyword: {keyword!r}")


def card_identity(card: Card) -> str | None:
    """The header identity of a card (`OBJECT`, `ESO OBS TPLNO`); None for commentary cards."""
    keyword = card.keyword.upper()
    return None if keyword in _NOT_VALUE_CARDS else keyword


def merge_keywords(current: list[FitsKeyword], updates: list[FitsKeyword]) -> list[FitsKeyword]:
    """OCM's UpdateKeywords: each update replaces the keyword of the same identity in place, or is appended.

    Identity is `(kind, name upper-cased)`, so `valueKeyword OBJECT` and `esoKeyword OBJECT` are different
    keywords. Literal keywords have no name: they are always appended. Duplicates within `current` collapse
    the same way (first position, last value), so the result holds each identity once.
    """
    merged: list[FitsKeyword] = []
    position: dict[tuple[str, str], int] = {}
    for keyword in (*current, *updates):
        identity = keyword_identity(keyword)
        if identity is None:
            merged.append(keyword)
        elif identity in position:
            merged[position[identity]] = keyword
        else:
            position[identity] = len(merged)
            merged.append(keyword)
    return merged


def keyword_card(keyword: FitsKeyword) -> Card:
    """The one 80-character astropy card of `keyword`.

    `valueKeyword` -> `NAME    = value / comment`; `esoKeyword` -> `HIERARCH ESO NAME = value / comment`
    (names upper-cased, as FITS and ESO write them); `literalKeyword` -> the card as written.

    Raises:
        KeywordError: the keyword is a structure keyword, does not fit in one card, is not ASCII, holds a
            value FITS cannot represent (NaN, infinity), or (literal) is not a card astropy can parse.
    """
    match keyword:
        case ValueKeyword(name=name, value=value, comment=comment):
            label = f"valueKeyword {name.upper()}"
            _check_value_card_name(name.upper(), label)
            return _checked_card(label, lambda fits: fits.Card(name.upper(), value, comment))
        case EsoKeyword(name=name, value=value, comment=comment):
            label = f"esoKeyword {name.upper()}"
            return _checked_card(
                label, lambda fits: fits.Card(f"HIERARCH ESO {name.upper()}", value, comment)
            )
        case LiteralKeyword(value=text):
            return _literal_card(text)
        case _:
            raise TypeError(f"not a FITS keyword: {keyword!r}")


def parse_keywords(raw: str | list[Any], where: str = "keywords") -> list[FitsKeyword]:
    """OCM's keyword list (a JSON string, or the decoded list) as typed keywords, each checked as a card.

    Raises:
        InvalidParams: naming the position and the problem (`keywords[2].name: ...`).
    """
    match raw:
        case str():
            if not raw.strip():
                raise InvalidParams(f"{where}: expected a JSON array of keywords, got an empty string")
            keywords = _decode(raw, list[FitsKeyword], where)
        case list():
            keywords = _decode(raw, list[FitsKeyword], where)
        case _:
            raise InvalidParams(f"{where}: expected a JSON array of keywords, got {type(raw).__name__}")
    check_keywords(keywords, where)
    return keywords


def parse_properties(raw: str | dict[str, Any]) -> DaqProperties:
    """StartDaq's `properties` (a JSON string or an object; "" and {} give the defaults), checked.

    Raises:
        InvalidParams: naming the field (`properties.awaitInterval: Expected `float` >= 0`).
    """
    match raw:
        case str():
            properties = _decode(raw, DaqProperties, "properties") if raw.strip() else DaqProperties()
        case dict():
            properties = _decode(raw, DaqProperties, "properties")
        case _:
            raise InvalidParams(f"properties: expected a JSON object, got {type(raw).__name__}")
    for field in ("awaitInterval", "sourceTimeout"):
        value = getattr(properties, field)
        if value is not None and not math.isfinite(value):
            raise InvalidParams(f"properties.{field}: expected a finite number, got {value}")
    check_keywords(properties.keywords, "properties.keywords")
    return properties


def check_keywords(keywords: list[FitsKeyword], where: str = "keywords") -> None:
    """Raise `InvalidParams` naming the first keyword that cannot be written as a FITS card."""
    for index, keyword in enumerate(keywords):
        try:
            keyword_card(keyword)
        except KeywordError as exc:
            raise InvalidParams(f"{where}[{index}]: {exc}") from exc


# -- helpers -------------------------------------------------------------------------------------------------
def _decode(raw: str | list[Any] | dict[str, Any], type_: type[_T], where: str) -> _T:
    try:
        if isinstance(raw, str):
            return msgspec.json.decode(raw, type=type_)
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise InvalidParams(_readable(str(exc), where)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidParams(f"{where}: invalid JSON ({exc})") from exc


def _readable(message: str, where: str) -> str:
    """`Expected `int` - at `$[2].value`` -> `keywords[2].value: Expected `int``."""
    found = _MSGSPEC_PATH.match(message)
    if found is None:
        return f"{where}: {message}"
    return f"{where}{found['path']}: {found['msg']}"


def _check_value_card_name(name: str, label: str) -> None:
    if _STRUCTURE.match(name):
        raise KeywordError(f"{label} is a FITS structure keyword, set only by the product writer")
    if name in _NOT_VALUE_CARDS:
        raise KeywordError(f"{label} is a commentary keyword: send it as a literalKeyword")


def _checked_card(label: str, build: Callable[[Any], Card]) -> Card:
    """Build a card with `build(fits)` and verify it, turning astropy's errors and warnings into one error."""
    from astropy.io import fits

    with _warnings_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            card = build(fits)
            image = card.image  # formatting is lazy: a card too long for 80 characters warns only here
        except (ValueError, TypeError, fits.VerifyError) as exc:
            raise KeywordError(f"{label}: {_one_line(exc)}") from exc
        if caught:  # checked before verify(): a truncated image would fail it with a misleading message
            problem = _one_line(caught[0].message)
            if "too long" in problem:
                problem = f"name, value and comment do not fit in one {_CARD_WIDTH}-character card"
            raise KeywordError(f"{label}: {problem}")
        if len(image) != _CARD_WIDTH:
            raise KeywordError(
                f"{label}: value too long for one {_CARD_WIDTH}-character card (no CONTINUE cards)"
            )
        try:
            card.verify("exception")
        except (ValueError, fits.VerifyError) as exc:
            raise KeywordError(f"{label}: {_one_line(exc)}") from exc
        if caught:
            raise KeywordError(f"{label}: {_one_line(caught[0].message)}")
    return card


def _literal_card(text: str) -> Card:
    if not _PRINTABLE_ASCII.match(text):
        raise KeywordError(f"literalKeyword {text!r}: a card holds printable ASCII characters only")
    card = _checked_card(f"literalKeyword {text.rstrip()!r}", lambda fits: _parsed(fits, text))
    keyword = card.keyword.upper()
    if _STRUCTURE.match(keyword):
        raise KeywordError(
            f"literalKeyword {keyword} is a FITS structure keyword, set only by the product writer"
        )
    if keyword in ("CONTINUE", "HIERARCH"):
        raise KeywordError(f"literalKeyword {text.rstrip()!r}: a lone {keyword} card is not a keyword")
    return card


def _parsed(fits: Any, text: str) -> Card:
    card = fits.Card.fromstring(text)
    _ = card.value  # parsing is lazy: an invalid value shows only when it is read
    return card


def _one_line(exc: object) -> str:
    text = _ASTROPY_FIX_HINT.sub("", str(exc))  # advice for astropy users, not for OCM clients
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not line.startswith(("Verification reported", "Note:"))]
    return " ".join(useful) or type(exc).__name__
