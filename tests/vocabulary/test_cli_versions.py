"""The plugins a recipe needs are read from its source and sink sections, on both sides: a
section that is no mapping, or a type that is no text, is refused as a bad plugin, not crashed on."""
from __future__ import annotations

import pytest

from vocabulary.cli_versions import InvalidPlugin, plugins_for


@pytest.mark.parametrize("recipe, said", [
    ({"source": {"type": "mysql"}, "sink": "foo"}, "the recipe's sink section is not a mapping"),
    ({"source": ["mysql"]}, "the recipe's source section is not a mapping"),
    ({"source": {"type": "mysql"}, "sink": {"type": 5}}, "the recipe's sink type '5' is not a plugin name"),
    ({"source": {"type": ["mysql"]}}, "the recipe's source type \"['mysql']\" is not a plugin name"),
])
def test_a_section_that_is_no_mapping_or_a_type_that_is_no_name_is_an_invalid_plugin(recipe, said):
    with pytest.raises(InvalidPlugin) as refused:
        plugins_for(recipe)
    assert said in str(refused.value)


def test_missing_or_empty_sections_need_no_plugin():
    assert plugins_for({"source": {"type": "mysql"}, "sink": None}) == ["mysql"]
    assert plugins_for({"source": {"type": "my.pkg.Source"}, "sink": {}}) == []
