"""docs/config.md and a commented example config, generated from the models in config.py.

``python -m advsample.config_docs [OUT]`` writes the reference (default: the repository's
docs/config.md); ``advsample config --reference|--example`` prints it or the example. Both
come from the fields' annotations, defaults, constraints and descriptions, so cannot drift.
"""

from __future__ import annotations

import inspect
import sys
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from advsample.config import RunConfig

#: Example values (by dotted key; evaluators as evaluate.<type>.<key>) for keys that must be
#: given, or that the example sets on purpose.
EXAMPLES = {"system.molecule": "NH3", "evaluate.path.generator": "umbrella_inversion",
            "evaluate.test_set.file": "test.extxyz", "evaluate.coverage.cvs": [[0, 1], [1, 0, 2]],
            "evaluate.conformers.file": "examples/data/alanine_phi_psi_grid.extxyz",
            "evaluate.conformers.phi": [1, 3, 4, 6], "evaluate.conformers.psi": [3, 4, 6, 8]}
#: The evaluator the example uses; the other types are shown commented out.
EXAMPLE_EVALUATOR = "path"

_BOUNDS = ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<"),
           (at.MinLen, "min_length", "≥"), (at.MaxLen, "max_length", "≤"))


def _models(ann) -> list[type[BaseModel]]:
    """The config models inside an annotation: a section, or the types of a list of them."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in get_args(ann) for m in _models(a)]


def _fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """A model's fields in declaration order, except that ``type`` comes first."""
    return sorted(model.model_fields.items(), key=lambda item: item[0] != "type")


def _doc(model: type[BaseModel]) -> str:
    """A model's docstring as one line."""
    return " ".join(inspect.cleandoc(model.__doc__ or "").split())


def _kind(model: type[BaseModel]) -> str:
    """The ``type`` an evaluator model is chosen by."""
    return model.model_fields["type"].default


def _yaml(value) -> str:
    """A value as YAML flow text: ``null``, ``true``, ``[[0, 1]]``, ``{features: 32}``."""
    text = yaml.safe_dump([to_jsonable_python(value)], default_flow_style=True, sort_keys=False,
                          width=1 << 30)
    return text.strip()[1:-1]


def _type(ann, meta=(), nested: bool = False) -> str:
    """A readable type: ``int ≥ 1``, ``null or float > 0``, ``one of: a, b``, ``list of [int]``.

    ``meta`` holds the field's constraints: bounds of a number, or of a list's length.
    """
    origin, args = get_origin(ann), get_args(ann)
    bounds = ", ".join(f"{sym} {getattr(m, attr)}" for m in meta for cls, attr, sym in _BOUNDS
                       if isinstance(m, cls))
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type(a, meta, nested) for a in rest)
        return f"null or {text}" if len(rest) < len(args) else text
    if origin is Annotated:  # a discriminated union of models
        return f"{{{args[1].discriminator}: …}}"
    if origin is Literal:
        return str(args[0]) if len(args) == 1 else "one of: " + ", ".join(map(str, args))
    if origin is tuple:
        return "(" + ", ".join(_type(a, nested=True) for a in args) + ")"
    if origin is list:
        item = _type(args[0], nested=True)
        if nested:
            return f"[{item}]"
        return f"list of {item}" + (f" ({bounds} items)" if bounds else "")
    if _models(ann):
        return "section"
    return "mapping" if ann is dict else f"{ann.__name__} {bounds}".rstrip()


def _table(model: type[BaseModel]) -> list[str]:
    """The markdown table of a model's keys: key | type | default | meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in _fields(model):
        if f.is_required():
            default = "**required**"
        elif _models(f.annotation) and get_origin(f.annotation) is not list:
            default = "see below"
        else:
            default = f"`{_yaml(f.get_default(call_default_factory=True))}`"
        cells = [f"`{name}`", f"`{_type(f.annotation, f.metadata)}`", default, f.description]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return rows


def _section(title: str, model: type[BaseModel], level: int) -> list[str]:
    """A heading, the model's docstring and its table."""
    return ["#" * level + " " + title, "", _doc(model), "", *_table(model), ""]


def _nested(key: str, model: type[BaseModel], level: int) -> list[str]:
    """The section of a model, then those of the sections inside it (``loop.convergence``)."""
    out = _section(key, model, level)
    for name, f in _fields(model):
        if get_origin(f.annotation) is not list:
            for sub in _models(f.annotation):
                out += _nested(f"{key}.{name}", sub, level + 1)
    return out


def reference_markdown() -> str:
    """docs/config.md: an intro, the top-level keys, then one section per config section."""
    out = ["# Run configuration reference", "",
           "_Generated by `python -m advsample.config_docs` from `src/advsample/config.py`; "
           "do not edit by hand._", "",
           "A run is described by one YAML file and started with `advsample run CONFIG.yaml`. "
           "Every key may be left out and then takes its default, except those marked "
           "**required**. Unknown keys and values of the wrong type are errors that name the "
           "file and the key. Paths are relative to the working directory (where `advsample` "
           "runs). `advsample config --example` prints a commented starting config with every "
           "key.", "", *_section("Top level", RunConfig, 2)]
    for name, f in _fields(RunConfig):
        if get_origin(f.annotation) is list:  # evaluate: one subsection per evaluator type
            out += [f"## {name}", "", f"{f.description[0].upper()}{f.description[1:]}. Each "
                    "entry is a mapping whose `type` picks one of the kinds below.", ""]
            for model in _models(f.annotation):
                out += _section(f"`type: {_kind(model)}`", model, 3)
        elif _models(f.annotation):
            out += _nested(name, _models(f.annotation)[0], 2)
    return "\n".join(out).rstrip() + "\n"


def _keys(model: type[BaseModel], key: str, indent: int, only_needed: bool = False) -> list[str]:
    """YAML lines ``name: value  # description`` of a model (``key``: its dotted prefix);
    ``only_needed`` (the commented-out evaluators) keeps ``type``, required and EXAMPLES keys.
    """
    pad, lines = " " * indent, []
    for name, f in _fields(model):
        subs = _models(f.annotation)
        if only_needed and not (name == "type" or f.is_required() or key + name in EXAMPLES):
            continue
        if get_origin(f.annotation) is list and subs:  # evaluate
            lines.append(f"{pad}{name}:  # {f.description}")
            for sub in sorted(subs, key=lambda m: _kind(m) != EXAMPLE_EVALUATOR):
                kind = _kind(sub)
                body = _keys(sub, f"{key}{name}.{kind}.", 0, kind != EXAMPLE_EVALUATOR)
                mark = "" if kind == EXAMPLE_EVALUATOR else "# "
                lines.append(f"{pad}  # {_doc(sub)}")
                lines += [f"{pad}  {mark}{'  ' if i else '- '}{line}"
                          for i, line in enumerate(body)]
        elif subs:
            lines.append(f"{pad}{name}:  # {f.description}")
            lines += _keys(subs[0], f"{key}{name}.", indent + 2)
        else:
            value = EXAMPLES.get(key + name, f.get_default(call_default_factory=True))
            lines.append(f"{pad}{name}: {_yaml(value)}  # {f.description}")
    return lines


def example_yaml() -> str:
    """A commented starting config: every key with its default (or an example) and meaning."""
    head = ["# advsample run configuration: advsample run THIS.yaml",
            "# Every key is shown with its default; leave out what you do not change. Unknown",
            "# keys are errors; paths are relative to the working directory. Reference:",
            "# docs/config.md (advsample config --reference).", ""]
    return "\n".join(head + _keys(RunConfig, "", 0)) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Write docs/config.md, or the file named by the one optional argument (-h: usage)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m advsample.config_docs",
                                     description="Write the configuration reference.")
    parser.add_argument("out", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[2] / "docs" / "config.md",
                        help="the Markdown file to write (default: docs/config.md)")
    out = parser.parse_args(sys.argv[1:] if argv is None else argv).out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(reference_markdown())
    print(out)


if __name__ == "__main__":
    main()
