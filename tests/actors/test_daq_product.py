"""The data product writer: a valid, checksummed multi-extension FITS file, written atomically."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from stationd.actors.daq_coordinator import product
from stationd.actors.daq_coordinator.product import ProductError, write_product
from stationd.protocol.daq import EsoKeyword, FitsKeyword, LiteralKeyword, SourceResult, ValueKeyword

DCS = SourceResult(
    keywords=[ValueKeyword("EXPTIME", 1.5, "exposure"), EsoKeyword("DET DIT", 0.25)],
    columns={"time": np.arange(4.0), "counts": np.array([1, 2, 3, 4], dtype=np.int32)},
)
CAM = SourceResult(
    keywords=[ValueKeyword("OBJECT", "from cam"), LiteralKeyword("COMMENT from cam")],
    columns={"frame": np.array([10, 11], dtype=np.int64), "ok": [True, False], "name": ["a", "bcd"]},
)
TCS = SourceResult(keywords=[EsoKeyword("TEL AIRM START", 1.2), ValueKeyword("OBJECT", "from tcs")])
USER: list[FitsKeyword] = [
    ValueKeyword("OBJECT", "OBJECT,SKY"),
    EsoKeyword("OBS TPLNO", 2),
    ValueKeyword("ARCFILE", "mine.fits"),
]


def write(path: Path, **kw: Any) -> product.ProductInfo:
    kw.setdefault("file_id", "STATION.2026-01-02T03:04:05.678")
    kw.setdefault("orig_file", "daq-1.fits")
    kw.setdefault("user_keywords", USER)
    kw.setdefault("primary", [("dcs", DCS), ("cam", CAM)])
    kw.setdefault("metadata", [("tcs", TCS)])
    return write_product(path, **kw)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[fits.HDUList]:
    """The product of two primary sources and one metadata source, opened with checksums verified and every
    warning an error."""
    path = tmp_path / "product.fits"
    write(path, now=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(path, checksum=True) as hdul:
            hdul.verify("exception")
            yield hdul


def test_the_primary_hdu_is_empty_and_followed_by_one_table_per_primary_source(opened: fits.HDUList) -> None:
    assert opened[0].data is None
    assert [hdu.name for hdu in opened[1:]] == ["DCS", "CAM"]
    assert all(isinstance(hdu, fits.BinTableHDU) for hdu in opened[1:])


def test_tables_hold_each_source_s_columns_and_values(opened: fits.HDUList) -> None:
    dcs, cam = opened["DCS"].data, opened["CAM"].data
    assert dcs.columns.names == ["time", "counts"]
    assert np.array_equal(dcs["time"], DCS.columns["time"])
    assert np.array_equal(dcs["counts"], DCS.columns["counts"])
    assert cam.columns.names == ["frame", "ok", "name"]
    assert np.array_equal(cam["frame"], [10, 11])
    assert np.array_equal(cam["ok"], [True, False])
    assert list(cam["name"]) == ["a", "bcd"]


def test_source_and_user_keywords_are_in_the_primary_header(opened: fits.HDUList) -> None:
    header = opened[0].header
    assert header["EXPTIME"] == 1.5
    assert header.comments["EXPTIME"] == "exposure"
    assert header["ESO DET DIT"] == 0.25
    assert header["HIERARCH ESO TEL AIRM START"] == 1.2
    assert header["ESO OBS TPLNO"] == 2
    assert header["HIERARCH ESO OBS TPLNO"] == 2
    assert list(header["COMMENT"]) == ["from cam"]


def test_user_keywords_win_over_source_keywords_and_take_the_first_position(opened: fits.HDUList) -> None:
    header = opened[0].header
    assert header["OBJECT"] == "OBJECT,SKY"
    assert list(header).count("OBJECT") == 1
    assert list(header).index("OBJECT") < list(header).index("ESO TEL AIRM START")


def test_an_earlier_source_wins_over_a_later_one(tmp_path: Path) -> None:
    path = tmp_path / "p.fits"
    write(path, user_keywords=[])
    assert fits.getheader(path)["OBJECT"] == "from cam"


def test_reserved_keywords_are_set_last_and_overwrite_a_user_value(opened: fits.HDUList) -> None:
    header = opened[0].header
    assert header["ARCFILE"] == "STATION.2026-01-02T03:04:05.678.fits"
    assert header["ORIGFILE"] == "daq-1.fits"
    assert header["DATE"] == "2026-01-02T03:04:05.678"
    assert list(header)[-5:] == ["ARCFILE", "ORIGFILE", "DATE", "CHECKSUM", "DATASUM"]


def test_every_hdu_carries_a_checksum(opened: fits.HDUList) -> None:
    assert all("CHECKSUM" in hdu.header and "DATASUM" in hdu.header for hdu in opened)


def test_date_defaults_to_the_current_utc_time(tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    write(tmp_path / "p.fits")
    written = datetime.fromisoformat(fits.getheader(tmp_path / "p.fits")["DATE"])
    assert before <= written <= datetime.now(UTC).replace(tzinfo=None)


def test_the_info_describes_what_was_written(tmp_path: Path) -> None:
    info = write(tmp_path / "p.fits")
    assert info.path == tmp_path / "p.fits"
    assert info.size == (tmp_path / "p.fits").stat().st_size
    assert info.size % 2880 == 0
    assert info.extensions == 2
    assert info.rows == {"dcs": 4, "cam": 2}
    assert info.skipped == ()


def test_a_primary_source_that_recorded_no_rows_gets_an_empty_table(tmp_path: Path) -> None:
    empty = SourceResult(columns={"time": np.array([], dtype=np.float64), "name": np.array([], dtype=str)})
    info = write(tmp_path / "p.fits", primary=[("dcs", empty)], metadata=[])
    with fits.open(tmp_path / "p.fits", checksum=True) as hdul:
        assert hdul["DCS"].columns.names == ["time", "name"]
        assert len(hdul["DCS"].data) == 0
    assert info.rows == {"dcs": 0}


def test_a_primary_source_without_columns_adds_keywords_only(tmp_path: Path) -> None:
    info = write(tmp_path / "p.fits", primary=[("dcs", DCS), ("kw", SourceResult(keywords=[]))])
    assert info.extensions == 1
    assert info.rows == {"dcs": 4, "kw": 0}


def test_columns_sent_by_a_metadata_source_are_reported_and_not_written(tmp_path: Path) -> None:
    info = write(tmp_path / "p.fits", metadata=[("tcs", DCS)])
    assert info.extensions == 2
    assert info.skipped == ("source tcs: columns of a metadata source are not written",)


def test_a_source_keyword_that_cannot_be_written_is_reported_and_the_rest_written(tmp_path: Path) -> None:
    bad = SourceResult(keywords=[ValueKeyword("NAXIS", 3), ValueKeyword("GOOD", 1)])
    info = write(tmp_path / "p.fits", metadata=[("tcs", bad)])
    header = fits.getheader(tmp_path / "p.fits")
    assert header["GOOD"] == 1
    assert header["NAXIS"] == 0
    assert len(info.skipped) == 1
    assert info.skipped[0].startswith("source tcs: valueKeyword NAXIS is a FITS structure keyword")


@pytest.mark.parametrize(
    "dtype", ["f8", "f4", "i8", "i4", "i2", "u1", "c16", "bool", "u2", "u4", "i1", "U3", "S3"]
)
def test_each_supported_column_type_round_trips(tmp_path: Path, dtype: str) -> None:
    values = np.array([0, 1, 1, 0], dtype=np.uint8).astype(dtype)
    source = SourceResult(columns={"v": values, "f": np.arange(4.0)})
    write(tmp_path / "p.fits", primary=[("dcs", source)], metadata=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(tmp_path / "p.fits", checksum=True) as hdul:
            hdul.verify("exception")
            read = hdul["DCS"].data["v"]
            expected = values.astype(str) if dtype.startswith("S") else values
            assert np.array_equal(read, expected)
            assert np.array_equal(hdul["DCS"].data["f"], np.arange(4.0))


def test_the_file_is_renamed_into_place_only_once_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "p.fits"
    seen: list[tuple[Path, bool, int]] = []
    real_replace = os.replace

    def replace(src: str, dst: Path) -> None:
        seen.append((Path(src), final.exists(), Path(src).stat().st_size))
        real_replace(src, dst)

    monkeypatch.setattr(product.os, "replace", replace)
    info = write(final)
    [(temporary, final_existed, size)] = seen
    assert temporary.parent == tmp_path and temporary != final
    assert not final_existed
    assert size == info.size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.fits"]


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", fail)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path / "p.fits")
    assert list(tmp_path.iterdir()) == []


def test_columns_of_different_lengths_are_refused_naming_the_source_and_no_file_is_written(
    tmp_path: Path,
) -> None:
    bad = SourceResult(columns={"a": np.arange(3), "b": np.arange(2)})
    with pytest.raises(ProductError, match=r"source cam: columns have different lengths \(a=3, b=2\)"):
        write(tmp_path / "p.fits", primary=[("dcs", DCS), ("cam", bad)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"a": np.zeros((2, 2))}, "column a is not 1-d"),
        ({"a": np.array([None, 1])}, "column a has an unsupported type"),
        ({"a": np.array(["2026-01-01"], dtype="datetime64[D]")}, "unsupported type"),
        ({"a": [1], "A": [2]}, "differ only in case"),
        ({"": [1]}, "not a printable ASCII name"),
        ({"a": ["Ångström"]}, "source dcs: cannot write its table"),
    ],
)
def test_a_table_astropy_cannot_write_is_refused_and_no_file_is_written(
    tmp_path: Path, columns: dict[str, Any], match: str
) -> None:
    with pytest.raises(ProductError, match=match):
        write(tmp_path / "p.fits", primary=[("dcs", SourceResult(columns=columns))])
    assert list(tmp_path.iterdir()) == []


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProductError, match="named more than once: dcs"):
        write(tmp_path / "p.fits", primary=[("dcs", DCS)], metadata=[("dcs", TCS)])
    assert list(tmp_path.iterdir()) == []
