"""Loading `hub.yaml`: YAML with line numbers, `HUB_*` environment overrides, readable errors.

Validation stays pure (pydantic); this module does the I/O around it and turns each
`ValidationError` entry into "path -> line -> message", with a "did you mean" for typos,
the way ESPHome and Frigate report config errors.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hub.config import HubConfig

ENV_PREFIX = "HUB_"
ENV_NESTING = "__"


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    line: int | None
    message: str
    origin: str  # the file name, or "environment HUB_..."

    def __str__(self) -> str:
        where = f"{self.origin}:{self.line}" if self.line else self.origin
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """The config is wrong; `issues` says where and why, one entry per problem."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and value."""


def _compose_lines(text: str) -> dict[tuple[str | int, ...], int]:
    lines: dict[tuple[str | int, ...], int] = {}
    root = yaml.compose(text, Loader=_LineLoader)

    def walk(node: yaml.Node | None, path: tuple[str | int, ...]) -> None:
        if node is None:
            return
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return lines


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """`HUB_BROKER__URL=mqtt://x` -> {("broker", "url"): ("HUB_BROKER__URL", "mqtt://x")}.

    Values are read as YAML scalars, so `HUB_INGEST__BATCH_MAX=100` is a number and
    `HUB_SIMULATE__ENABLED=true` a bool.
    """
    result: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "HUB_CONFIG":
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTING) if part)
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list) or value is None:
            value = raw if raw else None
        result[path] = (name, value)
    return result


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (for did-you-mean)."""
    model: Any = HubConfig
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *get_args(annotation)]
        for arg in list(candidates):
            if get_origin(arg) in (list, dict):
                candidates.extend(get_args(arg))
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _message(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and loc:
        parent = " -> ".join(str(p) for p in loc[:-1]) or "the top level"
        text = f"[{loc[-1]}] is an invalid option for [{parent}]"
        model = _model_at(loc)
        if model is not None:
            names = [f.alias or n for n, f in model.model_fields.items()]
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            text += (
                f"; did you mean [{close[0]}]?"
                if close
                else f"; valid options: {', '.join(sorted(names))}"
            )
        return text
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        value = error.get("input")
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"unknown value {value!r}: expected {expected}"
    if "input" in error and not isinstance(error["input"], dict | list):
        return f"{message} (got {error['input']!r})"
    return message


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> HubConfig:
    """Read `path` (or nothing: embedded defaults), apply HUB_* env and CLI overrides, validate.

    Raises ConfigError listing every problem with its path and line.
    """
    environ = os.environ if environ is None else environ
    origin = str(path) if path else "defaults"
    text = ""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                [ConfigIssue("(file)", None, f"cannot read: {exc.strerror}", origin)]
            ) from None
    try:
        data = yaml.safe_load(text) if text.strip() else {}
        lines = _compose_lines(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            [ConfigIssue("(yaml)", line, f"not valid YAML: {problem}", origin)]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigIssue(
                    "(top level)",
                    1,
                    "the file must be a mapping of sections (broker:, store:, ...)",
                    origin,
                )
            ]
        )
    env = env_overrides(environ)
    for env_path, (_, value) in env.items():
        _apply(data, env_path, value)
    for cli_path, value in (overrides or {}).items():
        _apply(data, cli_path, value)
    try:
        return HubConfig.model_validate(data)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            dotted = " -> ".join(str(p) for p in loc) or "(top level)"
            env_hit = next((name for p, (name, _) in env.items() if loc[: len(p)] == p), None)
            if env_hit:
                issues.append(ConfigIssue(dotted, None, _message(error), f"environment {env_hit}"))
                continue
            line = None
            for cut in range(len(loc), -1, -1):
                if loc[:cut] in lines:
                    line = lines[loc[:cut]]
                    break
            issues.append(ConfigIssue(dotted, line, _message(error), origin))
        # In the order of the file, as an editor walks it (pydantic reports in schema order);
        # problems from the environment, which have no line, come last.
        issues.sort(key=lambda issue: (issue.line is None, issue.line or 0))
        raise ConfigError(issues) from None


def example_config() -> str:
    """A complete, commented hub.yaml with every option at its default. It parses as is."""
    out: list[str] = [
        "# hub.yaml: every option with its default. Delete what you do not change.",
        "# Environment overrides: HUB_<SECTION>__<KEY>, e.g. HUB_BROKER__URL=mqtt://10.0.0.2:1883",
        "",
    ]

    def scalar(value: Any) -> str:
        dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
        return dumped.removesuffix("\n...").removesuffix("...").strip()

    def emit(model: BaseModel, indent: int) -> None:
        pad = "  " * indent
        dumped = model.model_dump(mode="json", by_alias=True)
        for name, field in type(model).model_fields.items():
            key = field.alias or name
            value = getattr(model, name)
            if field.description:
                out.append(f"{pad}# {field.description}")
            if isinstance(value, BaseModel):
                out.append(f"{pad}{key}:")
                emit(value, indent + 1)
            else:
                shown = dumped[key]
                if field.annotation is not None and "Secret" in str(field.annotation) and shown:
                    shown = "********"
                out.append(f"{pad}{key}: {scalar(shown) if shown is not None else 'null'}")
        if indent == 0:
            out.append("")

    emit(HubConfig(), 0)
    return "\n".join(out) + "\n"


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the schema."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema by `hub config reference`; do not edit by hand.",
        "Every option has a default. Environment overrides: `HUB_<SECTION>__<KEY>`",
        "(e.g. `HUB_BROKER__URL=mqtt://10.0.0.2:1883`). `hub config example` prints a commented",
        "hub.yaml with every default; `hub config check FILE` validates one.",
        "",
    ]

    def default_of(model: BaseModel, name: str) -> str:
        value = model.model_dump(mode="json", by_alias=True).get(
            type(model).model_fields[name].alias or name
        )
        field = type(model).model_fields[name]
        if field.annotation is not None and "Secret" in str(field.annotation) and value:
            return "`********`"
        if value in (None, {}, []):
            return "(none)" if value is None else f"`{value!r}`"
        return f"`{yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix('...').strip()}`"

    def section(model: BaseModel, path: str) -> None:
        rows = []
        nested = []
        for name, field in type(model).model_fields.items():
            key = field.alias or name
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                nested.append((f"{path}.{key}" if path else key, value, field.description or ""))
                continue
            rows.append(
                f"| `{key}` | {default_of(model, name)} | {(field.description or '').replace('|', '/')} |"
            )
        if rows:
            out.append(f"## `{path or '(top level)'}`")
            out.append("")
            doc = (type(model).__doc__ or "").strip().splitlines()
            if doc:
                out.extend([doc[0], ""])
            out.extend(["| option | default | what it does |", "|---|---|---|", *rows, ""])
        for sub_path, sub_model, _ in nested:
            section(sub_model, sub_path)

    section(HubConfig(), "")
    return "\n".join(out)
