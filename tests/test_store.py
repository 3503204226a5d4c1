"""Store: provenance round trips, failed labels kept but never trained on, and bad extxyz
input rejected with a clear message before anything is written."""

import hashlib
import json

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from advsample.oracles import make_oracle
from advsample.oracles.base import LabelResult
from advsample.store import Store
from advsample.structures import StructureError
from advsample.validation import validate_atoms


def labelled_nh3(seed):
    """A rattled NH3 with made-up labels (energy eV, forces [4, 3] eV/Å)."""
    rng = np.random.default_rng(seed)
    atoms = molecule("NH3")
    atoms.rattle(0.05, seed=seed)
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(rng.normal()), forces=rng.normal(size=(4, 3))
    )
    return atoms


def provenance(generation=1, **extra):
    return {"generation": generation, "sampler": "attack", **extra}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path):
    """A store with three labelled initial structures."""
    path = tmp_path / "initial.extxyz"
    ase.io.write(path, [labelled_nh3(k) for k in range(3)], format="extxyz")
    store = Store(tmp_path / "run.db")
    store.import_extxyz(path)
    return store


def test_import_marks_labelled_frames_ok_with_provenance(store):
    rows = store.rows()
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert {(r["generation"], r["sampler"], r["parent"], r["source"]) for r in rows} == {
        (0, "initial", -1, "initial.extxyz")
    }
    training = store.training_atoms()
    np.testing.assert_allclose(training[1].get_forces(), labelled_nh3(1).get_forces())
    assert training[1].get_potential_energy() == labelled_nh3(1).get_potential_energy()


def test_pending_then_record_round_trip(store):
    candidates = [molecule("NH3") for _ in range(3)]
    for k, atoms in enumerate(candidates):
        atoms.positions[0, 2] += 0.1 * k
    ids = store.add_pending(
        candidates,
        [provenance(parent=1, uncertainty=0.5 + k, objective=-2.0) for k in range(3)],
    )
    assert [i for i, _ in store.pending()] == ids
    assert store.pending(generation=2) == []
    np.testing.assert_allclose(store.pending()[2][1].positions, candidates[2].positions)

    oracle = make_oracle({"type": "emt"})
    forces = np.full((4, 3), 0.25)
    store.record(ids[0], LabelResult(-1.5, forces, "ok", "", 2.0), oracle)
    store.record(ids[1], LabelResult.failed("SCF not converged in 1 cycles", 3.0), oracle)
    assert [i for i, _ in store.pending()] == [ids[2]]

    fresh = Store(store.url)  # every record is committed on its own
    row = fresh.rows(id=ids[0])[0]
    assert (row["status"], row["energy"], row["seconds"]) == ("ok", -1.5, 2.0)
    assert (row["generation"], row["sampler"], row["parent"]) == (1, "attack", 1)
    assert (row["uncertainty"], row["objective"], row["oracle"]) == (0.5, -2.0, "emt")
    settings = ase.db.connect(store.url).get(id=ids[0]).data["oracle_settings"]
    assert json.loads(settings) == oracle.settings
    failed = fresh.rows(status="failed")
    assert [(r["id"], r["message"], r["energy"]) for r in failed] == [
        (ids[1], "SCF not converged in 1 cycles", None)
    ]

    training = fresh.training_atoms()
    assert len(training) == 4 and ids[1] not in [a.info["store_id"] for a in training]
    np.testing.assert_allclose(training[-1].get_forces(), forces)
    assert len(fresh.training_atoms(max_generation=0)) == 3
    assert fresh.count(status="pending") == 1 and fresh.count() == 6


def test_failed_record_clears_labels_and_keeps_numeric_looking_messages(store):
    (row_id,) = store.add_pending([molecule("H2O")], [provenance()])
    store.record(row_id, LabelResult(-3.0, np.zeros((3, 3)), "ok"))
    store.record(row_id, LabelResult.failed("nan"))
    row = store.rows(id=row_id)[0]
    assert row["status"] == "failed" and row["energy"] is None and "nan" in row["message"]


def test_add_pending_checks_provenance_before_writing(store):
    with pytest.raises(ValueError, match="generation"):
        store.add_pending([molecule("H2O")] * 2, [provenance(), {"sampler": "md"}])
    with pytest.raises(ValueError, match="2 structures but 1"):
        store.add_pending([molecule("H2O")] * 2, [provenance()])
    assert store.count() == 3


def test_export_import_round_trip(store, tmp_path):
    (row_id,) = store.add_pending([molecule("NH3")], [provenance()])
    store.record(row_id, LabelResult.failed("boom"))
    path = tmp_path / "out.extxyz"
    assert store.export_extxyz(path) == 3  # failed rows are not exported
    copy = Store(tmp_path / "copy.db")
    copy.import_extxyz(path, generation=5, sampler="imported")
    for a, b in zip(store.training_atoms(), copy.training_atoms(), strict=True):
        np.testing.assert_allclose(a.positions, b.positions)
        np.testing.assert_allclose(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()
    assert {r["generation"] for r in copy.rows()} == {5}
    assert store.export_extxyz(tmp_path / "failed.extxyz", status="failed") == 1


def test_unlabelled_frames_import_as_pending_when_labels_are_optional(store, tmp_path):
    path = tmp_path / "geometries.extxyz"
    ase.io.write(path, [molecule("NH3"), labelled_nh3(7)], format="extxyz")
    ids = store.import_extxyz(path, generation=1, sampler="md", require_labels=False)
    assert [r["status"] for r in store.rows(generation=1)] == ["pending", "ok"]
    assert [i for i, _ in store.pending()] == ids[:1]


def _write_text(text):
    def write(path):
        path.write_text(text)

    return write


def _write_frames(second_frame):
    """A good first frame and a bad second one (so messages must name frame 1)."""

    def write(path):
        ase.io.write(path, [labelled_nh3(0), second_frame()], format="extxyz")

    return write


def _nan_coordinates():
    atoms = labelled_nh3(1)
    atoms.positions[2, 1] = np.nan
    return atoms


def _overlapping():
    atoms = labelled_nh3(1)
    atoms.positions[3] = atoms.positions[0] + [0.2, 0, 0]
    return atoms


def _unlabelled():
    return molecule("NH3")


GOOD = (
    "2\nenergy=-1.0 Properties=species:S:1:pos:R:3:forces:R:3\n"
    "H 0 0 0 0 0 0.1\nH 0 0 0.74 0 0 -0.1\n"
)

BAD_INPUTS = {
    "missing file": (None, FileNotFoundError, "no such file"),
    "empty file": (_write_text(""), StructureError, "contains no structures"),
    "malformed": (
        _write_text(GOOD + "3\n\nH 0 0 0\n"),
        StructureError,
        "frame 1: malformed extxyz",
    ),
    "not numbers": (
        _write_text(GOOD + GOOD.replace("0.74", "abc")),
        StructureError,
        "frame 1: malformed extxyz",
    ),
    "unknown element": (
        _write_text(GOOD + GOOD.replace("H 0 0 0 ", "Xq 0 0 0 ")),
        StructureError,
        "frame 1: unknown element 'Xq'",
    ),
    "dummy element": (
        _write_text(GOOD + GOOD.replace("H 0 0 0 ", "X 0 0 0 ")),
        StructureError,
        "frame 1: atom 0 has unknown element",
    ),
    "nan coordinates": (
        _write_frames(_nan_coordinates),
        StructureError,
        "frame 1: coordinates contain NaN",
    ),
    "overlapping atoms": (
        _write_frames(_overlapping),
        StructureError,
        r"frame 1: atoms 0 and 3 are 0.200 Å apart",
    ),
    "missing energy": (_write_frames(_unlabelled), StructureError, "frame 1: has no energy"),
    "missing forces": (
        _write_text(GOOD + "2\nenergy=-1.0\nH 0 0 0\nH 0 0 0.74\n"),
        StructureError,
        "frame 1: has an energy but no forces",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_extxyz_is_rejected_and_leaves_the_database_untouched(store, tmp_path, case):
    write, error, problem = BAD_INPUTS[case]
    path = tmp_path / "bad.extxyz"
    if write is not None:
        write(path)
    db_path = tmp_path / "run.db"
    before = digest(db_path)
    with pytest.raises(error) as info:
        store.import_extxyz(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert problem in message, message
    assert digest(db_path) == before
    assert store.count() == 3


def test_validate_atoms_checks_periodic_images():
    """Atoms 0.3 Å apart through the cell boundary overlap too."""
    atoms = Atoms("H2", positions=[[0.1, 0, 0], [4.8, 0, 0]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(StructureError, match="cli input: frame 0: atoms 0 and 1"):
        validate_atoms([atoms], "cli input", require_labels=False)
    atoms.pbc = False
    validate_atoms([atoms], "cli input", require_labels=False)


def test_memory_store_behaves_like_the_database(tmp_path):
    from advsample.store import MemoryStore

    stores = [Store(tmp_path / "x.db"), MemoryStore()]
    for s in stores:
        s.add_labelled([labelled_nh3(0), labelled_nh3(1)])
        ids = s.add_pending([molecule("NH3")] * 3, [
            {"generation": 1, "sampler": "attack", "parent": 1, "uncertainty": 0.5}] * 3)
        s.record(ids[0], LabelResult(-1.5, np.ones((4, 3)), "ok", "", 0.1))
        s.record(ids[1], LabelResult.failed("boom"))
    db, mem = stores
    for selection in ({}, {"generation": 0}, {"status": "ok"}, {"status": "pending"},
                      {"generation": 1, "status": "failed"}, {"sampler": "attack"}):
        assert db.count(**selection) == mem.count(**selection), selection
    assert [i for i, _ in db.pending()] == [i for i, _ in mem.pending()]
    for a, b in zip(db.training_atoms(), mem.training_atoms(), strict=True):
        assert a.info == b.info
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_allclose(a.get_forces(), b.get_forces())
    assert [r["status"] for r in db.rows()] == [r["status"] for r in mem.rows()]
    assert [r["energy"] for r in db.rows()] == [r["energy"] for r in mem.rows()]
    assert db.training_atoms(max_generation=0)[-1].info["store_id"] == 2
