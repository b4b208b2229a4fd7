"""Bounded YAML parsing of recipes: bombs are refused quickly with a message that says why,
ordinary recipes (anchors included) load as yaml.safe_load would load them."""
from __future__ import annotations

import time

import pytest
import yaml

from vocabulary.safe_yaml import MAX_DEPTH, MAX_EXPANDED_CHARS, MAX_EXPANDED_NODES, YamlRefused, load_bounded

BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["source: {type: file, config: {x: *i}}"]
)


def test_a_billion_laughs_is_refused_in_milliseconds_without_expanding_it():
    started = time.perf_counter()
    with pytest.raises(YamlRefused, match="YAML bomb"):
        load_bounded(BILLION_LAUGHS)
    assert time.perf_counter() - started < 1.0


def test_deep_nesting_is_refused_instead_of_blowing_the_stack():
    with pytest.raises(YamlRefused, match=f"deeper than {MAX_DEPTH}"):
        load_bounded("source: " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecursionError):  # what plain safe_load does with it
        yaml.safe_load("[" * 100_000 + "]" * 100_000)


def test_oversized_text_is_refused():
    with pytest.raises(YamlRefused, match="larger than"):
        load_bounded("source: {type: file}\n" + "# padding\n" * 200_000)


def test_invalid_yaml_names_the_place():
    with pytest.raises(YamlRefused, match="line 3, column 5"):
        load_bounded("source:\n  type: [unclosed, x: y\nsink: z\n")


def test_ordinary_recipes_with_anchors_and_wide_lists_load_like_safe_load():
    recipe = ("defaults: &defaults {host_port: 'h:1', username: u}\n"
              "source: {type: mysql, config: {<<: *defaults, database: d}}\n"
              "sink: {type: file, config: {filename: out.json}}\n")
    assert load_bounded(recipe) == yaml.safe_load(recipe)
    wide = "source: {type: file}\nitems: [" + ", ".join(str(i) for i in range(MAX_EXPANDED_NODES // 2)) + "]\n"
    assert len(load_bounded(wide)["items"]) == MAX_EXPANDED_NODES // 2
    assert load_bounded("") is None


def test_the_depth_limit_is_exact_and_holds_below_libyamls_own():
    """The root is at depth 1: a scalar inside MAX_DEPTH - 1 collections loads, one level more is
    refused; 500 levels (below libyaml's own limit of 1000) are refused by our check, not libyaml's."""
    assert load_bounded("[" * (MAX_DEPTH - 1) + "x" + "]" * (MAX_DEPTH - 1)) is not None
    for depth in (MAX_DEPTH, 500):
        with pytest.raises(YamlRefused, match=f"deeper than {MAX_DEPTH}"):
            load_bounded("{a: " * depth + "x" + "}" * depth)


def test_a_recipe_the_constructor_or_libyaml_cannot_take_is_refused_not_raised():
    """An integer over Python's 4300 digits (ValueError) and a lone surrogate (UnicodeEncodeError
    in libyaml) escaped the loader: the executor's runner failed 'unexpectedly' and gave the run
    back as broken, retried elsewhere, instead of failing it INVALID_RECIPE."""
    for text, words in (("source: {type: mysql, config: {x: " + "9" * 5000 + "}}", "cannot be read"),
                        ('source: {type: "\ud800"}', "surrogate")):
        with pytest.raises(YamlRefused, match=words):
            load_bounded(text)


def test_the_node_limit_holds_with_and_without_aliases():
    """Without an alias the node count comes from the parser's events, with one from the composed
    graph: both refuse one node over the limit and load one under it."""
    def listing(count: int, item: str = "1") -> str:  # the root mapping, its key and the list: 3 nodes
        return "items: [" + ", ".join([item] * count) + "]\n"
    assert len(load_bounded(listing(MAX_EXPANDED_NODES - 3))["items"]) == MAX_EXPANDED_NODES - 3
    with pytest.raises(YamlRefused, match=f"more than {MAX_EXPANDED_NODES} nodes"):
        load_bounded(listing(MAX_EXPANDED_NODES - 2))
    aliased = "a: &a 1\n"  # 2 more nodes: the key and the anchored scalar
    assert len(load_bounded(aliased + listing(MAX_EXPANDED_NODES - 5, "*a"))["items"]) == MAX_EXPANDED_NODES - 5
    with pytest.raises(YamlRefused, match="YAML bomb"):
        load_bounded(aliased + listing(MAX_EXPANDED_NODES - 4, "*a"))


@pytest.mark.parametrize("text", ["a: &x [*x]", "source: &x\n  type: mysql\n  config: *x\n",
                                  "a: &x {b: [1, {c: *x}]}", "a: &x [&y [*y]]"])
def test_a_recursive_alias_is_refused_at_once(text):
    """An alias to a node around it: PyYAML builds a structure that contains itself, and the
    count of expanded nodes never ended (its list of pending nodes grew by ~60 MB a second in the
    runner that claimed it, the run held for good)."""
    started = time.perf_counter()
    with pytest.raises(YamlRefused, match="recursive alias"):
        load_bounded(text)
    assert time.perf_counter() - started < 1.0


def test_an_anchor_used_twice_side_by_side_is_no_recursion():
    text = "a: &x {k: v}\nb: [*x, *x, {c: *x}]\nsource: {type: file, config: *x}\n"
    assert load_bounded(text) == yaml.safe_load(text)


def test_aliases_of_a_long_string_are_refused_before_anyone_writes_them_out():
    """Each alias was one node, but PyYAML writes a string out in full at every alias: 2,000
    aliases of a 300 KB string (0.3 MB of recipe, well within the node limit) dumped to 600 MB
    when the executor handed the recipe to the CLI."""
    text = ("source:\n  type: mysql\n  config:\n    note: &x '" + "A" * 300_000 + "'\n"
            "    more: [" + ", ".join(["*x"] * 2_000) + "]\n")
    started = time.monotonic()
    with pytest.raises(YamlRefused, match=f"more than {MAX_EXPANDED_CHARS} characters"):
        load_bounded(text)
    assert time.monotonic() - started < 5, "refused without expanding it"


def test_an_anchored_block_reused_in_a_recipe_still_loads():
    text = ("defaults: &conn\n  host_port: db:5432\n  password: '${DB_PASSWORD}'\n"
            "source:\n  type: postgres\n  config: {<<: *conn, database: sales}\n"
            "other: [*conn, *conn]\n")
    assert load_bounded(text) == yaml.safe_load(text)
