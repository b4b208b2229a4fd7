"""JSON nested past the interpreter's recursion limit is a ValueError everywhere JSON comes in:
json.loads raises RecursionError for it, which every caller's `except ValueError` let through."""
from __future__ import annotations

import json

import pytest

from vocabulary import json_text
from vocabulary.message import MalformedMessage, decode
from vocabulary.results import executor_details

DEEP = "[" * 5000 + "]" * 5000  # 10 KB


def test_json_nested_past_the_limit_is_a_value_error_and_within_it_parses():
    with pytest.raises(RecursionError):
        json.loads(DEEP)
    with pytest.raises(ValueError, match="nested deeper than 200"):
        json_text.loads(DEEP)
    with pytest.raises(ValueError, match="nested deeper than 200"):  # parsed by json, refused by depth
        json_text.loads("[" * 201 + "]" * 201)
    assert json_text.loads("[" * 200 + "]" * 200) is not None
    assert json_text.loads('{"a": [{"b": 1}]}') == {"a": [{"b": 1}]}


def test_a_deeply_nested_queue_message_or_result_is_malformed_not_a_crash():
    with pytest.raises(MalformedMessage, match="not JSON"):
        decode("[" * 2000 + "]" * 2000)
    assert executor_details({"structuredReport": {"serializedValue": DEEP}}) == {}
