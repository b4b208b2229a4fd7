"""Just enough of the Dockerfile format to replay the project's Dockerfile without a Docker engine:
stages, ARG defaults, ENV (several KEY=VALUE per line, $VAR expansion), COPY, RUN, USER, ENTRYPOINT,
CMD and HEALTHCHECK in exec form. Anything else in the file is kept as a raw instruction, so a test
can assert it knows every instruction the Dockerfile uses."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    argument: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.argument for i in self.instructions if i.keyword == keyword]

    def env(self, inherited: dict[str, str]) -> dict[str, str]:
        """The ENV of this stage, in order, each value expanded against what came before."""
        values = dict(inherited)
        for argument in self.all("ENV"):
            for pair in shlex.split(argument):
                key, _, value = pair.partition("=")
                values[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ""), value)
        return values

    def exec_form(self, keyword: str) -> list[str]:
        (argument,) = self.all(keyword)
        return json.loads(argument)


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped (pragmas included)."""
    logical, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    result = []
    for line in logical:
        keyword, _, argument = line.partition(" ")
        result.append(Instruction(keyword.upper(), argument.strip()))
    return result


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order)."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.argument.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            result.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif instruction.keyword == "ARG" and not result:
            key, _, value = instruction.argument.partition("=")
            global_args[key] = value
        else:
            result[-1].instructions.append(instruction)
    return global_args, result


def arg_defaults(stage: Stage) -> dict[str, str]:
    return dict(argument.partition("=")[::2] for argument in stage.all("ARG"))


def healthcheck_command(stage: Stage) -> list[str]:
    (argument,) = stage.all("HEALTHCHECK")
    return json.loads(argument[argument.index("CMD") + 3:].strip())
