"""The admin CLI as README.md's "The control plane" walks a newcomer through it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import RECIPE

ADMIN = [str(Path(sys.executable).parent / "datahub-executor-admin")]


def admin_cli(cp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATAHUB_CONTROLPLANE_URL": cp.base_url, "DATAHUB_ADMIN_TOKEN": cp.admin_token}
    return subprocess.run([*ADMIN, *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_name_two_sources_share_is_refused_naming_both_urns(cp, tmp_path):
    """README makes `pg` with `sources create`, then deploys `pg` with DataHub's `datahub ingest
    deploy --name pg`, which makes a second source (its urn derived from the name). Every command
    by name then said only "2 sources are named pg; give the urn", and the urns had to be dug
    out of `sources list`."""
    cp.create_pool("remote", default=True)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    created = json.loads(admin_cli(cp, "--json", "sources", "create", "pg", "--recipe-file", str(recipe)).stdout)
    deployed = "urn:li:dataHubIngestionSource:deploy-0123456789abcdef"
    cp.graphql("mutation($u: String!, $i: UpdateIngestionSourceInput!) { updateIngestionSource(urn: $u, input: $i) }",
               u=deployed, i={"name": "pg", "type": "datahub-mock-data",
                              "config": {"recipe": json.dumps({"source": {"type": "datahub-mock-data"}}),
                                         "executorId": "remote"}})
    for command in (["sources", "show", "pg"], ["sources", "run", "pg"], ["executions", "list", "--source", "pg"]):
        refused = admin_cli(cp, *command)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "2 sources are named pg: give one's urn instead of the name" in lines[0]
        assert created["urn"] in lines[0] and deployed in lines[0]
    shown = admin_cli(cp, "--json", "sources", "show", deployed)
    assert shown.returncode == 0 and json.loads(shown.stdout)["pool_id"] == "remote", shown.stderr


def test_help_says_what_each_command_does():
    """`datahub-executor-admin pools --help` listed {list,create,show,delete,set-default,describe,
    queues} and nothing else: that `describe` sets the description (and `show` shows) was left to
    guess. Every group and every command of a group now has a line of help."""
    import argparse

    from controlplane.admin_cli import build_parser

    def undescribed(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if name not in described:
                        missing.append(f"{prefix}{name}")
                    if prefix == "":
                        missing += undescribed(sub, f"{name} ")
        return missing

    missing = undescribed(build_parser(), "")
    assert missing == [], f"no help line for: {missing}"
