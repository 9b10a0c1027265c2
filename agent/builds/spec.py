"""`runtime.yml`: the schema of a runtime definition, and its validation with field and line.

A runtime folder holds `runtime.yml` and the setup script it names. The schema (every field):

```yaml
name: python-3.11-ml            # [a-z0-9][a-z0-9._-]{0,62}: no '/', no '..'; must equal the folder name
language: python                # free text: python, java, node, ...
version: "3.11"                 # free text (quote it: YAML reads 3.10 as a number)
description: CPython 3.11 with numpy, pandas, matplotlib
architectures: [x86_64]         # uname -m values it builds on; the build refuses others
packages: [numpy, pandas]       # what the setup script installs; given to it as RUNTIME_PACKAGES
build:
  setup: setup.sh               # a file in the runtime folder, run with /bin/sh in the builder
  network: bridge               # "none" | "bridge": whether the setup downloads from the registries
  timeout_s: 1800
  memory_mb: 2048
  disk_mb: 512                  # the builder's /work + /tmp (its tmpfs)
  install_mb: 4096              # what the setup script may install (its prefix is a tmpfs this big)
mounts:                         # what a production job gets, read-only
  - source: venv                # relative to the runtime's install prefix (RUNTIME_PREFIX)
    target: /opt/runtimes/python-3.11-ml/venv    # absolute, below /opt/runtimes/<name>
    readonly: true              # must be true: runtimes are never writable in production
environment:                    # added to a production job's environment
  PATH: /opt/runtimes/python-3.11-ml/venv/bin:/usr/local/bin:/usr/bin:/bin
script:                         # how `script` jobs (a cell's body) run: command + the script's path
  command: [/opt/runtimes/python-3.11-ml/venv/bin/python3]
  suffix: .py                   # .py runs the cell runner (inputs/outputs); .java is saved as Main.java
test:                           # the runtime's own test, run in a production sandbox
  command: [python3, -c, "import pandas; print(pandas.__version__)"]   # or `script: ...`
  expect: ""                    # optional text the test's stdout must contain
  timeout_s: 120
```

The setup script runs as an unprivileged user in the builder sandbox with `RUNTIME_NAME`,
`RUNTIME_PREFIX` (= `/opt/runtimes/<name>`, the only writable place that is kept), and
`RUNTIME_PACKAGES` set. Everything it leaves under the prefix is staged; the cleanup phase copies
each mount's `source` into `isolated/` and rewrites this file so that every source starts with
`isolated/` (the original is kept as `runtime.yml.original`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..contract import check_env, check_runtime_name
from ..fs import COMPONENT

PREFIX_ROOT = "/opt/runtimes"


class RuntimeSpecError(ValueError):
    """runtime.yml is not valid; the message names the field and its line."""


def check_name(name: str) -> str:
    """contract.check_runtime_name, refusing with a RuntimeSpecError."""
    try:
        return check_runtime_name(name)
    except ValueError as exc:
        raise RuntimeSpecError(str(exc)) from None


def prefix_of(name: str) -> str:
    return f"{PREFIX_ROOT}/{check_name(name)}"


def _relative(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or "\x00" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path!r} must be a relative path without '.', '..' or empty parts")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuildSection(_Strict):
    setup: str = "setup.sh"
    network: Literal["none", "bridge"] = "none"
    timeout_s: float = Field(1800, gt=0, le=6 * 3600)
    memory_mb: int = Field(2048, ge=64, le=1 << 20)
    disk_mb: int = Field(512, ge=16, le=1 << 20)
    install_mb: int = Field(4096, ge=16, le=1 << 20)

    @field_validator("setup")
    @classmethod
    def _file(cls, value: str) -> str:
        if not COMPONENT.match(value):
            raise ValueError(f"{value!r} must be a file name in the runtime's folder (no '/')")
        return value


class MountEntry(_Strict):
    source: str
    target: str
    readonly: bool = True

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return _relative(value)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must be absolute")
        _relative(value[1:])
        return value

    @field_validator("readonly")
    @classmethod
    def _readonly(cls, value: bool) -> bool:
        if not value:
            raise ValueError("runtime mounts are read-only in production: set readonly: true")
        return value


class ScriptSection(_Strict):
    command: list[str] = Field(..., min_length=1, max_length=64)
    suffix: str = Field(".py", pattern=r"^\.[a-z0-9]{1,8}$")


class TestSection(_Strict):
    command: list[str] | None = Field(None, min_length=1, max_length=64)
    script: str | None = Field(None, max_length=1 << 20)
    expect: str | None = None
    timeout_s: float = Field(120, gt=0, le=3600)

    @model_validator(mode="after")
    def _one(self) -> "TestSection":
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of `command` or `script`")
        return self


class RuntimeSpec(_Strict):
    name: Annotated[str, AfterValidator(check_runtime_name)]
    language: str = Field(..., min_length=1, max_length=64)
    version: str = Field(..., min_length=1, max_length=64)
    description: str = Field("", max_length=1024)
    architectures: list[str] = Field(..., min_length=1)
    packages: list[str] = Field(default_factory=list, max_length=512)
    build: BuildSection = Field(default_factory=BuildSection)
    mounts: list[MountEntry] = Field(..., min_length=1, max_length=32)
    environment: Annotated[dict[str, str], AfterValidator(lambda env: check_env(env, "environment"))] = \
        Field(default_factory=dict)
    script: ScriptSection
    test: TestSection

    @field_validator("version", "language", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("packages")
    @classmethod
    def _packages(cls, value: list[str]) -> list[str]:
        for p in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+<>=!~,\[\]@-]*$", p):
                raise ValueError(f"package {p!r} has characters a package name does not")
        return value

    @field_validator("mounts")
    @classmethod
    def _targets(cls, mounts: list[MountEntry], info: ValidationInfo) -> list[MountEntry]:
        name = info.data.get("name")
        if not name:
            return mounts
        prefix = prefix_of(name)
        for i, m in enumerate(mounts):
            if m.target != prefix and not m.target.startswith(prefix + "/"):
                raise ValueError(f"mounts[{i}].target {m.target!r} must lie below {prefix} (a runtime "
                                 "never shadows system paths or another runtime)")
        return mounts

    @field_validator("mounts")
    @classmethod
    def _not_nested(cls, mounts: list[MountEntry]) -> list[MountEntry]:
        """A source inside another source would be copied twice and bound over a folder the outer
        bind already shows, and its own path would run through a tree the setup script shaped
        (`ln -s / a/b` made a runtime show the host's root): nest targets, never sources."""
        parts = [m.source.strip("/").split("/") for m in mounts]
        for i, outer in enumerate(parts):
            for j, inner in enumerate(parts):
                if i != j and len(inner) > len(outer) and inner[:len(outer)] == outer:
                    raise ValueError(f"mounts[{j}].source {mounts[j].source!r} lies inside mounts[{i}].source "
                                     f"{mounts[i].source!r}: mount the outer folder once (what is inside "
                                     f"comes with it) or give each mount a source of its own")
        return mounts

    @property
    def prefix(self) -> str:
        return prefix_of(self.name)

    def isolated_mounts(self) -> list[MountEntry]:
        """The mounts as published: every source inside `isolated/`."""
        return [MountEntry(source=f"isolated/{m.source}", target=m.target, readonly=True) for m in self.mounts]


@dataclass
class ParsedSpec:
    spec: RuntimeSpec
    text: str
    data: dict[str, Any]


def parse(text: str, where: str = "runtime.yml") -> ParsedSpec:
    """Parse and validate runtime.yml text; errors name the field and its line."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise RuntimeSpecError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise RuntimeSpecError(f"{where}: expected a mapping of fields (name, language, version, mounts, ...)")
    lines = _lines(node)
    try:
        spec = RuntimeSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            loc = tuple(err.get("loc", ()))
            field = _field_name(loc) or "(top level)"
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown field"
            elif err.get("type") == "missing":
                msg = "required field is missing"
            problems.append(f"{where} line {_line_of(lines, loc)}, {field}: {msg}")
        raise RuntimeSpecError("; ".join(problems)) from None
    return ParsedSpec(spec=spec, text=text, data=data)


def _field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _lines(node: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """(field path) -> 1-based line, from the YAML node tree."""
    found: dict[tuple[Any, ...], int] = {}
    if node is None:
        return found
    found[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[path + (key.value,)] = key.start_mark.line + 1
            for sub, line in _lines(value, path + (key.value,)).items():
                if sub != path + (key.value,):
                    found[sub] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.update(_lines(item, path + (i,)))
    return found


def _line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int:
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def rewrite_isolated(parsed: ParsedSpec) -> str:
    """The published runtime.yml: the original with every mount source moved into `isolated/`."""
    data = dict(parsed.data)
    data["mounts"] = [m.model_dump() for m in parsed.spec.isolated_mounts()]
    header = ("# Written by the agent's cleanup phase: every mount source lies inside isolated/.\n"
              "# The definition as written is runtime.yml.original.\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
