"""docs/config.md and the example config are generated from config.py and stay in sync."""

import re
from pathlib import Path

import pytest
import yaml

from advsample.cli import main
from advsample.config import (
    EvalPath,
    LoopSettings,
    RunConfig,
    SystemConfig,
    TrainSettings,
    parse_config,
)
from advsample.config_docs import _models, example_yaml, reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _all_models(model=RunConfig):
    """RunConfig and every model below it, evaluator types included."""
    found = [model]
    for f in model.model_fields.values():
        for sub in _models(f.annotation):
            found += _all_models(sub)
    return found


def test_doc_is_in_sync():
    assert DOC.read_text() == reference_markdown(), (
        "docs/config.md is stale: run `python -m advsample.config_docs`")


def test_every_field_is_described_and_documented():
    models = _all_models()
    assert len(models) == 17  # RunConfig, 9 sections, loop.convergence, 6 evaluators
    text = reference_markdown()
    for model in models:
        assert model.__doc__, model.__name__
        for name, f in model.model_fields.items():
            assert f.description and f.description.strip(), f"{model.__name__}.{name}"
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} missing from the doc"
    for heading in ("## system", "### loop.convergence", "### `type: path`",
                    "### `type: coverage`"):
        assert f"\n{heading}\n" in text


def test_types_are_readable():
    text = reference_markdown()
    for row in ("| `frames` | `int ≥ 2` | `40` |", "| `lr` | `float > 0` | `0.003` |",
                "| `method` | `one of: md, normal_modes, uniform_box` | `md` |",
                "| `val_fraction` | `float ≥ 0, < 1` | `0.1` |",
                "| `energy_max` | `null or float` | `null` |",
                "| `cvs` | `list of [int] (≥ 1, ≤ 2 items)` | **required** |",
                "| `system` | `section` | **required** |"):
        assert row in text, row


def test_example_parses_to_the_defaults():
    cfg = parse_config(yaml.safe_load(example_yaml()), "example")
    assert cfg.train.epochs == TrainSettings().epochs
    assert cfg.system == SystemConfig(molecule="NH3")
    assert cfg.evaluate == [EvalPath(generator="umbrella_inversion")]
    for name, f in RunConfig.model_fields.items():
        if name not in ("system", "evaluate"):
            assert getattr(cfg, name) == f.get_default(call_default_factory=True), name


def test_commented_evaluators_parse_when_uncommented():
    text = re.sub(r"^  # (?=- |  )", "  ", example_yaml(), flags=re.M)
    cfg = parse_config(yaml.safe_load(text), "uncommented")
    assert [e.type for e in cfg.evaluate] == ["path", "test_set", "stability", "coverage",
                                              "grid", "conformers"]


def test_cli_config(capsys):
    assert main(["config", "--example"]) == 0
    out = capsys.readouterr().out
    assert out == example_yaml()
    assert parse_config(yaml.safe_load(out)).loop.generations == LoopSettings().generations
    assert main(["config", "--reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--example" in err


def test_main_writes_the_named_file_and_help_writes_nothing(tmp_path, monkeypatch, capsys):
    from advsample.config_docs import main as write_reference

    write_reference([str(tmp_path / "ref.md")])
    assert (tmp_path / "ref.md").read_text() == reference_markdown()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        write_reference(["--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out
    assert not (tmp_path / "--help").exists()
