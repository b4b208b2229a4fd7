import pytest

from executor.runtime.masking import MASK, Masker
from vocabulary.memory_limit import InvalidMemoryLimit, parse_memory_limit_kb


def test_a_bare_memory_limit_is_kilobytes_as_documented():
    assert parse_memory_limit_kb("128000") == 128000 * 1024
    assert parse_memory_limit_kb("512M") == 512 << 20
    assert parse_memory_limit_kb("4G") == 4 << 30
    assert parse_memory_limit_kb(None) is None
    assert parse_memory_limit_kb(" ") is None


@pytest.mark.parametrize("text", ["lots", "-5", "0", "12Q"])
def test_a_bad_memory_limit_names_the_value_and_the_forms(text):
    with pytest.raises(InvalidMemoryLimit, match="kilobytes"):
        parse_memory_limit_kb(text)


def test_masking_covers_plain_json_and_url_forms():
    secret = 'p@ss"w/rd'
    masker = Masker([secret, "xy"])
    line = f'password={secret} json={{"p": "p@ss\\"w/rd"}} uri=postgres://u:p%40ss%22w%2Frd@h/db short=xy'
    masked = masker.mask(line)
    assert "p@ss" not in masked and "p%40ss" not in masked
    assert masked.count(MASK) == 3
    assert "short=xy" in masked, "values under 3 characters are not masked"


def test_a_secret_containing_another_is_masked_whole():
    masked = Masker(["abc", "abcdef"]).mask("v=abcdef")
    assert masked == f"v={MASK}"
