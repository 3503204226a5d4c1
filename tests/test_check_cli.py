"""``advsample check`` and the calculator's safe zone, with a tiny committee trained on EMT NH3.

The unsafe frame compresses an N-H bond to ≈ 0.7 Å. An H pulled 2.5 Å away is not used: the
tiny committee's σ does not grow there (its members agree that an atom leaving the others
feels little force), so no σ-based safe zone can flag it.
"""

import csv
import json
import shutil
import warnings

import ase.io
import numpy as np
import pytest
import torch
from helpers import labelled_nh3

from advsample.calculator import CommitteeCalculator, UnsafeStructure, UnsafeStructureWarning
from advsample.calibration import Calibration, committee_sigma, force_errors
from advsample.cli import main
from advsample.committee import Committee
from advsample.structures import Batch
from advsample.train import TrainConfig, fit


def compressed(atoms, shift: float = -0.3):
    """A copy of ``atoms`` with H 1 moved ``shift`` Å along the N-H 1 bond, without labels."""
    a = atoms.copy()
    bond = a.positions[1] - a.positions[0]
    a.positions[1] += shift * bond / np.linalg.norm(bond)
    return a


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Trained committee with calibration.json beside it; training frames; one unsafe frame;
    a threshold 1.5× the largest bound of the training frames."""
    root = tmp_path_factory.mktemp("check")
    torch.manual_seed(0)
    train = labelled_nh3(20, seed=0)
    committee = Committee.build("painn", 3, features=8, interactions=1)
    fit(committee, Batch.from_atoms(train), TrainConfig(epochs=150, lr=1e-2, patience=1000))
    committee.eval()
    ckpt = root / "committee.pt"
    committee.save(ckpt)

    held = Batch.from_atoms(labelled_nh3(20, seed=1))  # calibration set: not trained on
    forces = committee(held).forces.detach()
    sigma, _ = committee_sigma(forces, held.structure, held.n_structures)
    error, _ = force_errors(forces, held.forces, held.structure, held.n_structures)
    calibration = Calibration.fit(sigma, error)
    calibration.save(root / "calibration.json")

    def max_sigma(frames):
        batch = Batch.from_atoms(frames, labels=False)
        return committee_sigma(committee(batch).forces.detach(), batch.structure,
                               batch.n_structures)[0].reshape(len(frames), -1).max(1)

    unsafe = compressed(train[0])
    train_max, unsafe_max = max_sigma(train).max(), max_sigma([unsafe])[0]
    assert unsafe_max > 2 * train_max, "the committee's σ must grow on the compressed bond"
    threshold = 1.5 * calibration.bound(train_max)
    ase.io.write(root / "train.extxyz", train, format="extxyz")
    ase.io.write(root / "unsafe.extxyz", [unsafe], format="extxyz")
    return {"root": root, "ckpt": ckpt, "calibration": calibration, "threshold": threshold,
            "train": train, "unsafe": unsafe}


def test_check_inside_exits_0_outside_exits_1(setup, capsys):
    root, thr = setup["root"], setup["threshold"]
    base = ["check", str(setup["ckpt"]), "--bound", str(thr)]
    assert main([*base[:2], str(root / "train.extxyz"), *base[2:], "-o", str(root / "t.csv"),
                 "--plot", str(root / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "calibrated 90% force-error bound" in out and "0 of 20 frames outside" in out
    with open(root / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and [int(r["frame"]) for r in rows] == list(range(20))
    bounds = np.array([float(r["bound"]) for r in rows])
    assert np.all(bounds <= thr) and all(r["inside"] == "True" for r in rows)
    np.testing.assert_allclose(bounds, setup["calibration"].q * np.array(
        [float(r["max_sigma"]) for r in rows]), rtol=1e-6)
    assert (root / "t.png").stat().st_size > 0

    with pytest.raises(SystemExit) as exc:
        main([*base[:2], str(root / "unsafe.extxyz"), *base[2:], "-o", str(root / "u.json")])
    assert exc.value.code == 1
    out = capsys.readouterr().out
    assert "OUTSIDE" in out and "1 of 1 frames outside" in out
    report = json.loads((root / "u.json").read_text())
    assert report["kind"] == "calibrated" and report["outside"] == [0]
    assert report["frames"][0]["bound"] > thr and report["threshold"] == thr


def test_check_without_calibration_uses_raw_sigma_and_needs_a_bound(setup, tmp_path, capsys):
    ckpt = tmp_path / "alone" / "committee.pt"
    ckpt.parent.mkdir()
    shutil.copy(setup["ckpt"], ckpt)
    frames = str(setup["root"] / "train.extxyz")
    assert main(["check", str(ckpt), frames]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bound" in err[0]
    assert main(["check", str(ckpt), frames, "--bound", "100"]) == 0
    assert "raw committee spread" in capsys.readouterr().out
    # the threshold may come from the calibration file's recommended value
    cal = Calibration.from_dict({**setup["calibration"].as_dict(), "recommended_bound": 1e-6})
    cal.save(tmp_path / "strict.json")
    with pytest.raises(SystemExit) as exc:
        main(["check", str(ckpt), frames, "--calibration", str(tmp_path / "strict.json")])
    assert exc.value.code == 1
    assert "20 of 20 frames outside" in capsys.readouterr().out
    assert main(["check", str(ckpt), frames, "--calibration", str(tmp_path / "none.json"),
                 "--bound", "1"]) == 2


def test_calculator_safe_zone(setup):
    thr, train, unsafe = setup["threshold"], setup["train"], setup["unsafe"]
    calc = CommitteeCalculator(str(setup["ckpt"]), safe_bound=thr, on_unsafe="raise")
    assert calc.calibration == setup["calibration"]  # found beside the checkpoint
    assert calc.calibration_path == setup["root"] / "calibration.json"
    atoms = train[3].copy()
    atoms.calc = calc
    atoms.get_forces()
    r = calc.results
    sigma = np.sqrt(r["atom_force_variance"])
    np.testing.assert_allclose(r["atom_force_error_bound"], calc.calibration.q * sigma,
                               rtol=1e-6)
    np.testing.assert_allclose(r["atom_force_error_expected"], calc.calibration.scale * sigma,
                               rtol=1e-6)
    assert r["force_error_bound"] == pytest.approx(r["atom_force_error_bound"].max())
    assert r["force_error_bound"] <= thr

    bad = unsafe.copy()
    bad.calc = calc
    for _ in range(2):  # nothing cached: asking again raises again
        with pytest.raises(UnsafeStructure) as exc:
            bad.get_forces()
        assert exc.value.value > thr and exc.value.bound == thr
        assert "safe bound" in str(exc.value) and isinstance(exc.value, RuntimeError)

    bad.calc = CommitteeCalculator(str(setup["ckpt"]), safe_bound=thr)  # default: warn
    with pytest.warns(UnsafeStructureWarning, match="force-error bound .* exceeds the safe"):
        bad.get_forces()
    ok = train[3].copy()
    ok.calc = CommitteeCalculator(str(setup["ckpt"]), safe_bound=thr, on_unsafe="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok.get_forces()
        bad.calc = CommitteeCalculator(str(setup["ckpt"]), safe_bound=thr, on_unsafe="ignore")
        bad.get_forces()

    raw = CommitteeCalculator(str(setup["ckpt"]), calibration=False, safe_bound=1e-6,
                              on_unsafe="raise")
    assert raw.calibration is None
    ok.calc = raw
    with pytest.raises(UnsafeStructure, match="uncalibrated"):
        ok.get_forces()
    with pytest.raises(ValueError):
        CommitteeCalculator(str(setup["ckpt"]), safe_bound=1.0, on_unsafe="explode")
