"""OCM's FITS keyword JSON: parsing, card checks with errors naming the position, UpdateKeywords merging."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stationd.actors.daq_coordinator.keywords import (
    keyword_card,
    keyword_identity,
    merge_keywords,
    parse_keywords,
    parse_properties,
)
from stationd.protocol.daq import DaqProperties, EsoKeyword, FitsKeyword, LiteralKeyword, ValueKeyword
from stationd.protocol.errors import InvalidParams

SPEC_EXAMPLE = (
    '[{"type":"valueKeyword","name":"OBJECT","value":"OBJECT,SKY"},'
    '{"type":"esoKeyword","name":"OBS TPLNO","value":2}]'
)


def value(name: str, v: Any = 1, comment: str = "") -> dict[str, Any]:
    return {"type": "valueKeyword", "name": name, "value": v, "comment": comment}


def invalid(raw: Any, where: str = "keywords") -> str:
    with pytest.raises(InvalidParams) as caught:
        parse_keywords(raw, where)
    assert caught.value.code == "invalid_params"
    return caught.value.msg


# -- parse_keywords: valid -----------------------------------------------------------------------------------
def test_the_spec_example_parses_from_its_json_string() -> None:
    assert parse_keywords(SPEC_EXAMPLE) == [
        ValueKeyword(name="OBJECT", value="OBJECT,SKY"),
        EsoKeyword(name="OBS TPLNO", value=2),
    ]


def test_an_already_decoded_list_parses_like_its_json_string() -> None:
    assert parse_keywords(json.loads(SPEC_EXAMPLE)) == parse_keywords(SPEC_EXAMPLE)


def test_json_types_are_kept_int_float_bool_and_str() -> None:
    raw = json.dumps([value("I", 2), value("F", 2.0), value("B", True), value("S", "2")])
    values = [k.value for k in parse_keywords(raw) if isinstance(k, ValueKeyword)]
    assert values == [2, 2.0, True, "2"]
    assert [type(v) for v in values] == [int, float, bool, str]


def test_literal_commentary_and_value_cards_are_accepted() -> None:
    cards = [
        "COMMENT Example of a commentary keyword.",
        "HISTORY written by stationd",
        "        a blank-keyword card",
        "OBJECT  = 'M31'              / a whole value card",
        "HIERARCH ESO DET DIT = 1.5",
    ]
    keywords = parse_keywords([{"type": "literalKeyword", "value": card} for card in cards])
    assert keywords == [LiteralKeyword(value=card) for card in cards]


def test_reserved_keywords_are_accepted_because_the_product_writer_overwrites_them() -> None:
    names = ["ARCFILE", "ORIGFILE", "DATE", "CHECKSUM", "DATASUM"]
    assert len(parse_keywords([value(name, "x") for name in names])) == 5


def test_an_eso_keyword_filling_exactly_one_card_is_accepted() -> None:
    name = "DET " + "A" * (80 - len("HIERARCH ESO DET  = 1") - 1)
    card = keyword_card(parse_keywords([{"type": "esoKeyword", "name": name, "value": 1}])[0])
    assert len(card.image) == 80


def test_an_empty_list_is_no_keywords() -> None:
    assert parse_keywords("[]") == []
    assert parse_keywords([]) == []


# -- parse_keywords: errors name the position ----------------------------------------------------------------
def test_invalid_json_is_refused() -> None:
    assert invalid('[{"type": "valueKeyword"').startswith("keywords: invalid JSON")


def test_an_empty_string_is_refused() -> None:
    assert "empty string" in invalid("")


def test_an_unknown_type_is_refused_naming_its_position() -> None:
    msg = invalid([value("A"), {"type": "fooKeyword", "name": "B", "value": 1}])
    assert msg.startswith("keywords[1].type:")


def test_a_missing_name_is_refused_naming_the_field() -> None:
    msg = invalid('[{"type":"valueKeyword","value":1}]')
    assert msg.startswith("keywords[0]:") and "`name`" in msg


def test_a_value_keyword_name_longer_than_8_characters_is_refused() -> None:
    assert invalid([value("OK"), value("TOOLONGNAME")]).startswith("keywords[1].name:")


def test_an_unknown_field_is_refused() -> None:
    msg = invalid([{**value("A"), "unit": "s"}])
    assert msg.startswith("keywords[0]:") and "unknown field `unit`" in msg


def test_a_value_of_the_wrong_type_is_refused_naming_the_field() -> None:
    assert invalid([value("A", [1, 2])]).startswith("keywords[0].value:")


def test_a_list_item_that_is_not_an_object_is_refused() -> None:
    assert invalid([value("A"), 3]).startswith("keywords[1]:")


def test_the_position_prefix_follows_the_where_argument() -> None:
    assert invalid([value("TOOLONGNAME")], where="params.keywords").startswith("params.keywords[0].name:")


@pytest.mark.parametrize(
    "name",
    [
        *("SIMPLE", "BITPIX", "NAXIS", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS"),
        *("TFORM3", "TTYPE12", "TBCOL1", "GROUPS", "END", "naxis1"),
    ],
)
def test_structure_keywords_are_refused(name: str) -> None:
    msg = invalid([value("A"), value(name)])
    assert msg.startswith("keywords[1]:") and "structure keyword" in msg


@pytest.mark.parametrize("card", ["SIMPLE  =                    T", "NAXIS1  =                   10", "END"])
def test_structure_keywords_are_refused_as_literal_cards_too(card: str) -> None:
    assert "structure keyword" in invalid([{"type": "literalKeyword", "value": card}])


@pytest.mark.parametrize("name", ["COMMENT", "HISTORY", "CONTINUE"])
def test_commentary_names_are_refused_as_value_keywords(name: str) -> None:
    assert "literalKeyword" in invalid([value(name, "text")])


def test_an_eso_keyword_whose_card_exceeds_80_characters_is_refused() -> None:
    msg = invalid([{"type": "esoKeyword", "name": "DET " + "A" * 60, "value": "a long string value"}])
    assert msg.startswith("keywords[0]:") and "80-character card" in msg


def test_a_string_value_needing_continue_cards_is_refused() -> None:
    msg = invalid([value("OBJECT", "x" * 69)])
    assert msg.startswith("keywords[0]:") and "80-character card" in msg


def test_a_comment_that_would_be_truncated_is_refused() -> None:
    assert "80-character card" in invalid([value("OBJECT", "x", comment="c" * 80)])


@pytest.mark.parametrize("field", ["value", "comment"])
def test_non_ascii_text_is_refused(field: str) -> None:
    msg = invalid([value("A"), {**value("OBJECT", "x"), field: "Ångström"}])
    assert msg.startswith("keywords[1]:") and "ASCII" in msg


def test_a_float_fits_cannot_represent_is_refused() -> None:
    assert invalid([value("A", float("nan"))]).startswith("keywords[0]:")


@pytest.mark.parametrize(
    "card",
    ["not a card at all", "OBJECT  = 'unterminated", "OBJECT  = bare words", "lower   = 1", "CONTINUE  'x'"],
)
def test_a_literal_card_astropy_cannot_parse_is_refused(card: str) -> None:
    assert invalid([{"type": "literalKeyword", "value": card}]).startswith("keywords[0]: literalKeyword")


def test_a_literal_card_with_non_ascii_characters_is_refused() -> None:
    assert "ASCII" in invalid([{"type": "literalKeyword", "value": "COMMENT café"}])


# -- cards ---------------------------------------------------------------------------------------------------
def test_an_eso_keyword_becomes_an_upper_case_hierarch_eso_card() -> None:
    card = keyword_card(EsoKeyword(name="obs tplno", value=2, comment="template number"))
    assert card.image.startswith("HIERARCH ESO OBS TPLNO = 2")
    assert card.comment == "template number"


def test_a_literal_keyword_is_written_as_given() -> None:
    assert keyword_card(LiteralKeyword(value="COMMENT as written")).image.rstrip() == "COMMENT as written"


# -- merge_keywords ------------------------------------------------------------------------------------------
def test_an_update_replaces_the_keyword_of_the_same_identity_in_place() -> None:
    current = [ValueKeyword("A", 1), ValueKeyword("B", 2), ValueKeyword("C", 3)]
    merged = merge_keywords(current, [ValueKeyword("b", 20, "new")])
    assert merged == [ValueKeyword("A", 1), ValueKeyword("b", 20, "new"), ValueKeyword("C", 3)]


def test_an_update_with_a_new_identity_is_appended() -> None:
    assert merge_keywords([ValueKeyword("A", 1)], [ValueKeyword("B", 2)]) == [
        ValueKeyword("A", 1),
        ValueKeyword("B", 2),
    ]


def test_an_eso_keyword_and_a_value_keyword_with_the_same_name_are_different_keywords() -> None:
    merged = merge_keywords([ValueKeyword("OBJECT", "a")], [EsoKeyword("OBJECT", "b")])
    assert merged == [ValueKeyword("OBJECT", "a"), EsoKeyword("OBJECT", "b")]


def test_literal_keywords_are_always_appended() -> None:
    card = LiteralKeyword("COMMENT same text")
    assert merge_keywords([card], [card]) == [card, card]


def test_merging_leaves_its_inputs_unchanged() -> None:
    current = [ValueKeyword("A", 1)]
    merge_keywords(current, [ValueKeyword("A", 2)])
    assert current == [ValueKeyword("A", 1)]


names = st.sampled_from(["OBJECT", "object", "EXPTIME", "DET DIT", "det dit", "OBS TPLNO", "A"])
values = st.one_of(st.integers(-(2**31), 2**31), st.booleans(), st.text("abc XYZ", max_size=5))
keywords = st.one_of(
    st.builds(ValueKeyword, name=names.filter(lambda n: " " not in n), value=values),
    st.builds(EsoKeyword, name=names, value=values),
    st.builds(LiteralKeyword, value=st.sampled_from(["COMMENT one", "HISTORY two"])),
)


@given(st.lists(keywords, max_size=12), st.lists(keywords, max_size=12))
def test_a_merge_holds_each_identity_once_with_its_last_value(
    current: list[FitsKeyword], updates: list[FitsKeyword]
) -> None:
    merged = merge_keywords(current, updates)
    everything = [*current, *updates]
    identities = [keyword_identity(k) for k in merged if keyword_identity(k) is not None]
    assert len(identities) == len(set(identities))
    last = {keyword_identity(k): k for k in everything}
    assert {keyword_identity(k): k for k in merged} == last
    first_seen = list(dict.fromkeys(keyword_identity(k) for k in everything if keyword_identity(k)))
    assert identities == first_seen
    literals = [k for k in everything if isinstance(k, LiteralKeyword)]
    assert [k for k in merged if isinstance(k, LiteralKeyword)] == literals


# -- parse_properties ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["", "  ", "{}", {}])
def test_empty_properties_give_the_defaults(raw: str | dict[str, Any]) -> None:
    assert parse_properties(raw) == DaqProperties()


def test_the_spec_properties_example_parses_as_string_and_object() -> None:
    raw = f'{{"awaitInterval": 2.5, "keywords": {SPEC_EXAMPLE}}}'
    properties = parse_properties(raw)
    assert properties.awaitInterval == 2.5
    assert properties.keywords == parse_keywords(SPEC_EXAMPLE)
    assert parse_properties(json.loads(raw)) == properties


@pytest.mark.parametrize(
    ("raw", "start"),
    [
        ('{"awaitInterval": -1}', "properties.awaitInterval: Expected `float` >= 0"),
        ({"awaitInterval": "5"}, "properties.awaitInterval: Expected `float`, got `str`"),
        ({"sourceTimeout": 0}, "properties.sourceTimeout:"),
        ({"awaitInterval": float("inf")}, "properties.awaitInterval: expected a finite number"),
        ('{"awaitInterval": 1, "color": "red"}', "properties: Object contains unknown field `color`"),
        ("[]", "properties: Expected `object`"),
        ("{", "properties: invalid JSON"),
        ({"keywords": [value("TOOLONGNAME")]}, "properties.keywords[0].name:"),
        ({"keywords": [value("A"), value("NAXIS")]}, "properties.keywords[1]: valueKeyword NAXIS"),
    ],
)
def test_invalid_properties_are_refused_naming_the_field(raw: Any, start: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        parse_properties(raw)
    assert caught.value.msg.startswith(start), caught.value.msg
