import pytest

from advsample.config import ConfigError, load_config

GOOD = "system: {molecule: NH3}\nsampler: {steps: 10}\n"


def test_good_config_loads_with_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.sampler.steps == 10 and cfg.committee.model == "painn"
    assert cfg.sampler.energy_above_initial == "auto"
    assert cfg.oracle.spec() == {"type": "xtb", "method": "GFN2-xTB", "charge": 0, "uhf": 0}


@pytest.mark.parametrize("text, needle", [
    ("system: {molecule: NH3}\nsampler: {stepz: 10}\n", "sampler.stepz: unknown key"),
    ("system: {molecule: NH3}\nsampler: {steps: many}\n", "sampler.steps: Input should be"),
    ("system: {molecule: NH3}\nbogus: 1\n", "bogus: unknown key"),
    ("sampler: {steps: 10}\n", "system: Field required"),
    ("system: {molecule: NH3, file: x.xyz}\n", "exactly one"),
    ("system: [\n", "not valid YAML"),
    ("- 1\n- 2\n", "top level"),
    ("system: {molecule: NH3}\nsampler: {energy_above_initial: -0.1}\n",
     "sampler.energy_above_initial"),
    ("system: {molecule: NH3}\nsampler: {energy_above_training: 0.1}\n",
     "sampler.energy_above_training: unknown key"),
])
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_model_hyperparameter_defaults_follow_the_model():
    from advsample.config import parse_config

    base = {"system": {"molecule": "NH3"}}
    assert parse_config({**base, "committee": {"model": "mlp"}}).committee.hyperparameters == {}
    painn = parse_config(base).committee.hyperparameters
    assert painn == {"features": 32, "interactions": 2, "cutoff": 4.0}
    given = {"model": "painn", "hyperparameters": {"features": 8}}
    assert parse_config({**base, "committee": given}).committee.hyperparameters == {"features": 8}


@pytest.mark.parametrize("value", ["auto", 0.2, None])
def test_energy_above_initial_takes_auto_a_number_or_null(tmp_path, value):
    p = tmp_path / "c.yaml"
    p.write_text(f"system: {{molecule: NH3}}\nsampler: {{energy_above_initial: "
                 f"{'null' if value is None else value}}}\n")
    assert load_config(p).sampler.energy_above_initial == value
