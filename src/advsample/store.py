"""Labelled structures with provenance in an ASE database (SQLite file or PostgreSQL URL).

One row per structure. Its key-value pairs hold the provenance:

generation  int    active-learning generation that produced it (0 = initial data)
sampler     str    "initial", "attack", "md", "random", ...
parent      int    row id of the seed structure, -1 if none
uncertainty float  committee uncertainty at selection (optional)
objective   float  attack objective at selection (optional)
oracle      str    name of the oracle that labelled it (optional)
status      str    "pending" (selected, not labelled yet), "ok", "failed" or "rejected"
                   (labelled, but judged unusable: advsample.screening; never trained on)
message     str    why a label failed or was rejected ("" otherwise)
seconds     float  wall time of the oracle call (s)
source      str    file a structure was imported from (imports only)

and ``data["oracle_settings"]`` the oracle's settings as a JSON string. Labels (energy in eV,
forces [n, 3] in eV/Å) are the row's calculator results. Candidates are written as "pending"
before they are labelled and each label is committed on its own, so a killed run loses no
finished oracle call and knows which ones are still to do.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db.core import str_represents

from advsample.oracles.base import LabelResult, Oracle
from advsample.structures import StructureError
from advsample.validation import attached_labels, validate_atoms

STORE_NAME = "labels.db"  # a run directory's store
REQUIRED = ("generation", "sampler")
COLUMNS = (
    "id",
    "generation",
    "sampler",
    "parent",
    "status",
    "energy",
    "uncertainty",
    "objective",
    "oracle",
    "message",
    "seconds",
    "natoms",
    "formula",
)


class Store:
    """Structures and their labels with provenance, in ``ase.db`` at ``url``.

    url: path of an SQLite file (any extension; created on first use) or a
    ``postgresql://`` URL (needs the packages ase-db-backends and psycopg2).
    """

    def __init__(self, url: str | os.PathLike):
        self.url = str(url)
        self._db = ase.db.connect(self.url, type="extract_from_name" if "://" in self.url else "db")

    # ---------------------------------------------------------------- writing
    def add_pending(self, atoms_list: Sequence[Atoms], provenance: Sequence[dict]) -> list[int]:
        """Write unlabelled candidates (status "pending") in one transaction; their row ids.

        ``provenance[k]`` describes ``atoms_list[k]``: "generation" and "sampler" are required;
        "parent", "uncertainty", "objective", "oracle", "oracle_settings" (a dict) and any other
        scalar keys are optional. Non-finite floats are left out.
        """
        if len(atoms_list) != len(provenance):
            raise ValueError(
                f"{len(atoms_list)} structures but {len(provenance)} provenance entries"
            )
        rows = [_row_fields(p) for p in provenance]  # all checked before anything is written
        with self._db as db:
            return [
                db.write(_without_labels(atoms), data=data, status="pending", message="", **kvp)
                for atoms, (kvp, data) in zip(atoms_list, rows, strict=True)
            ]

    def record(self, row_id: int, result: LabelResult, oracle: Oracle | None = None) -> None:
        """Store the outcome of labelling row ``row_id`` (one transaction).

        ok and rejected: energy and forces become the row's labels (a rejected row is never
        returned by :meth:`training_atoms`). failed: labels are removed. status, message and
        seconds are set; with ``oracle`` its name and settings too.
        """
        atoms = self._db.get(id=row_id).toatoms()
        atoms.calc = None
        if result.energy is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=result.energy, forces=result.forces)
        kvp: dict[str, Any] = {
            "status": result.status,
            "message": _text(result.message),
            "seconds": float(result.seconds),
        }
        data = None
        if oracle is not None:
            kvp["oracle"] = _text(oracle.name)
            data = {"oracle_settings": json.dumps(oracle.settings)}
        self._db.update(row_id, atoms=atoms, data=data, **kvp)

    def import_extxyz(
        self,
        path: str | os.PathLike,
        generation: int = 0,
        sampler: str = "initial",
        require_labels: bool = True,
    ) -> list[int]:
        """Add every frame of an extxyz file; their row ids, in file order.

        Frames with energy and forces get status "ok"; without labels (allowed only when
        ``require_labels`` is False) "pending". The whole file is read and validated first
        (:func:`advsample.validation.validate_atoms`), so a bad file raises
        FileNotFoundError or StructureError naming the file, frame and problem, and leaves the
        store untouched; the frames are then written in one transaction.
        """
        frames = read_extxyz(path)
        validate_atoms(frames, str(path), require_labels)
        with self._db as db:
            return [
                db.write(
                    atoms,
                    generation=int(generation),
                    sampler=_text(sampler),
                    parent=-1,
                    source=_text(Path(path).name),
                    status="ok" if attached_labels(atoms)[0] is not None else "pending",
                    message="",
                )
                for atoms in frames
            ]

    def add_labelled(self, atoms_list: Sequence[Atoms], generation: int = 0,
                     sampler: str = "initial") -> list[int]:
        """Structures made by the package with their labels attached (e.g. generated initial
        data), status "ok", in one transaction; their row ids."""
        with self._db as db:
            return [db.write(atoms, generation=int(generation), sampler=_text(sampler),
                             parent=-1, status="ok", message="") for atoms in atoms_list]

    # ---------------------------------------------------------------- reading
    def pending(self, generation: int | None = None) -> list[tuple[int, Atoms]]:
        """(row id, structure) of every row still waiting for its label, by id."""
        selection = {} if generation is None else {"generation": int(generation)}
        return [
            (row.id, row.toatoms())
            for row in self._db.select(status="pending", sort="id", **selection)
        ]

    def training_atoms(self, max_generation: int | None = None) -> list[Atoms]:
        """Labelled structures (status "ok") of generations <= ``max_generation``, by id.

        Each has its energy (eV) and forces [n, 3] (eV/Å) in a SinglePointCalculator and
        ``info["store_id"]``, ``info["generation"]``. Failed and pending rows never appear.
        """
        query = None if max_generation is None else f"generation<={int(max_generation)}"
        out = []
        for row in self._db.select(query, status="ok", sort="id"):
            atoms = row.toatoms()
            atoms.info.update(store_id=row.id, generation=row.generation)
            out.append(atoms)
        return out

    def rows(self, **selection: Any) -> list[dict[str, Any]]:
        """One dict per matching row (``ase.db`` selection keywords, e.g. status="ok").

        Keys: the :data:`COLUMNS` (None where absent) plus any other key-value pair.
        """
        out = []
        for row in self._db.select(sort="id", **selection):
            d = {key: row.get(key) for key in COLUMNS}
            d.update(row.key_value_pairs)
            out.append(d)
        return out

    def count(self, **selection: Any) -> int:
        """Number of rows matching the ``ase.db`` selection keywords."""
        return self._db.count(**selection)

    def export_extxyz(
        self, path: str | os.PathLike, generation: int | None = None, status: str | None = "ok"
    ) -> int:
        """Write the selected rows (all generations / statuses when None) to an extxyz file.

        Labels are written as the frames' energy and forces, provenance as info keys
        (store_id, generation, sampler, parent, status). Returns the number of frames.
        """
        selection: dict[str, Any] = {}
        if generation is not None:
            selection["generation"] = int(generation)
        if status is not None:
            selection["status"] = status
        frames = []
        for row in self._db.select(sort="id", **selection):
            atoms = row.toatoms()
            atoms.info.update(
                store_id=row.id,
                generation=row.generation,
                sampler=row.sampler,
                parent=row.parent,
                status=row.status,
            )
            frames.append(atoms)
        ase.io.write(path, frames, format="extxyz")
        return len(frames)


def read_extxyz(path: str | os.PathLike) -> list[Atoms]:
    """All frames of an extxyz file, reading errors turned into one line naming file and frame.

    Raises FileNotFoundError for a missing file and StructureError for an unreadable frame.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    frames: list[Atoms] = []
    try:
        for atoms in ase.io.iread(path, index=":", format="extxyz"):
            frames.append(atoms)
    except KeyError as exc:  # ase's lookup of an unknown chemical symbol
        raise StructureError(f"{path}: frame {len(frames)}: unknown element {exc}") from exc
    except Exception as exc:  # any parser error means a malformed file
        text = " ".join(str(exc).split())
        raise StructureError(f"{path}: frame {len(frames)}: malformed extxyz ({text})") from exc
    return frames


def _row_fields(provenance: dict) -> tuple[dict[str, Any], dict[str, str] | None]:
    """(key-value pairs, data) of one row from a provenance dict, checked."""
    missing = [key for key in REQUIRED if key not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}: {provenance}")
    kvp: dict[str, Any] = {"parent": -1}
    data = None
    for key, value in provenance.items():
        if key == "oracle_settings":
            data = {"oracle_settings": json.dumps(value)}
        elif key in ("generation", "parent"):
            kvp[key] = int(value)
        elif isinstance(value, str):
            kvp[key] = _text(value)
        elif isinstance(value, (bool, np.bool_)):
            kvp[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            kvp[key] = int(value)
        elif value is not None:
            number = float(value)  # Python, numpy or 0-d torch floats
            if math.isfinite(number):
                kvp[key] = number
    return kvp, data


def _text(value: str) -> str:
    """A string ase.db stores as text (it rejects strings that read as numbers or bools)."""
    value = str(value)
    if any(str_represents(value, t) for t in (bool, int, float)):
        return f"'{value}'"
    return value


def _without_labels(atoms: Atoms) -> Atoms:
    copy = atoms.copy()
    copy.calc = None
    return copy


class MemoryStore:
    """The :class:`Store` interface in memory, for toy runs and tests that keep no files.

    Rows are ase.Atoms (labels in a SinglePointCalculator) with the same provenance keys;
    ids count from 1 as in ase.db. Selection keywords match by equality.
    """

    def __init__(self):
        self.url = "memory"
        self._rows: list[dict[str, Any]] = []

    def _write(self, atoms: Atoms, **kvp: Any) -> int:
        row_id = len(self._rows) + 1
        self._rows.append({"id": row_id, "atoms": atoms, "parent": -1, "message": "", **kvp})
        return row_id

    def add_pending(self, atoms_list: Sequence[Atoms], provenance: Sequence[dict]) -> list[int]:
        """Unlabelled candidates as "pending" rows; see :meth:`Store.add_pending`."""
        if len(atoms_list) != len(provenance):
            raise ValueError(
                f"{len(atoms_list)} structures but {len(provenance)} provenance entries")
        rows = [_row_fields(p)[0] for p in provenance]
        return [self._write(_without_labels(a), status="pending", **kvp)
                for a, kvp in zip(atoms_list, rows, strict=True)]

    def add_labelled(self, atoms_list: Sequence[Atoms], generation: int = 0,
                     sampler: str = "initial") -> list[int]:
        """Structures carrying their labels, status "ok"."""
        return [self._write(a.copy() if a.calc is None else _with_labels(a),
                            generation=int(generation), sampler=sampler, status="ok")
                for a in atoms_list]

    def record(self, row_id: int, result: LabelResult, oracle: Oracle | None = None) -> None:
        """The outcome of labelling row ``row_id``; see :meth:`Store.record`."""
        row = self._rows[row_id - 1]
        atoms = _without_labels(row["atoms"])
        if result.energy is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=result.energy, forces=result.forces)
        row.update(atoms=atoms, status=result.status, message=result.message,
                   seconds=float(result.seconds))
        if oracle is not None:
            row["oracle"] = oracle.name

    def pending(self, generation: int | None = None) -> list[tuple[int, Atoms]]:
        """(row id, structure) of every pending row, by id."""
        return [(r["id"], r["atoms"].copy()) for r in self._select(status="pending")
                if generation is None or r["generation"] == generation]

    def training_atoms(self, max_generation: int | None = None) -> list[Atoms]:
        """Labelled rows of generations <= ``max_generation``; see :meth:`Store.training_atoms`."""
        out = []
        for r in self._select(status="ok"):
            if max_generation is None or r["generation"] <= max_generation:
                atoms = _with_labels(r["atoms"])
                atoms.info.update(store_id=r["id"], generation=r["generation"])
                out.append(atoms)
        return out

    def rows(self, **selection: Any) -> list[dict[str, Any]]:
        """One dict per matching row with the :data:`COLUMNS` (None where absent)."""
        out = []
        for r in self._select(**selection):
            d = {key: r.get(key) for key in COLUMNS}
            d["energy"] = r["atoms"].calc.results["energy"] if r["atoms"].calc else None
            d["natoms"], d["formula"] = len(r["atoms"]), r["atoms"].get_chemical_formula()
            out.append(d)
        return out

    def count(self, **selection: Any) -> int:
        """Number of rows matching the selection keywords."""
        return len(self._select(**selection))

    def _select(self, **selection: Any) -> list[dict[str, Any]]:
        return [r for r in self._rows if all(r.get(k) == v for k, v in selection.items())]


def _with_labels(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` that keeps its calculator's energy and forces."""
    copy = atoms.copy()
    if atoms.calc is not None:
        copy.calc = SinglePointCalculator(copy, **{k: v for k, v in atoms.calc.results.items()
                                                   if k in ("energy", "forces")})
    return copy


@contextlib.contextmanager
def naming_store(run_dir: str | Path):
    """Inside the block, a database error names the run's store file (sqlite's messages do
    not), as a ValueError."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{Path(run_dir) / STORE_NAME}: {exc}") from exc
