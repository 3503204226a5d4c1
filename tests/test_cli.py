"""The command line: bad input gives one clear line and exit status 2."""

import json
import subprocess
import sys

import ase.io
import pytest
from helpers import labelled_nh3

from advsample.cli import main


def _run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("content, needle", [
    ("not an xyz file\nat all\n", "bad.extxyz"),
    ("1\nProperties=species:S:1:pos:R:3 energy=1.0\nN nan 0 0\n", "NaN"),
    ("2\nProperties=species:S:1:pos:R:3 energy=1.0\nN 0 0 0\nH 0 0 0.1\n", "apart"),
    ("1\nProperties=species:S:1:pos:R:3 energy=1.0\nXx 0 0 0\n", "bad.extxyz"),
    ("", "bad.extxyz"),
])
def test_train_rejects_bad_extxyz(tmp_path, capsys, content, needle):
    bad = tmp_path / "bad.extxyz"
    bad.write_text(content)
    code, out = _run(["train", str(bad), "-o", str(tmp_path / "c.pt")], capsys)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "c.pt").exists()


def test_missing_files_and_bad_config(tmp_path, capsys):
    code, out = _run(["train", str(tmp_path / "none.extxyz")], capsys)
    assert code == 2 and "none.extxyz" in out.err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("system: {molecule: NH3}\ncommittee: {size: one}\n")
    code, out = _run(["run", str(cfg), "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "committee.size" in out.err and str(cfg) in out.err
    assert not (tmp_path / "r" / "labels.db").exists()
    code, out = _run(["status", str(tmp_path / "nowhere")], capsys)
    assert code == 2


def test_train_attack_label_round_trip(tmp_path, capsys):
    data = tmp_path / "train.extxyz"
    ase.io.write(data, labelled_nh3(12), format="extxyz")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("system: {molecule: NH3}\ncommittee: {size: 2, hyperparameters: "
                   "{features: 8, interactions: 1, cutoff: 4.0}}\ntrain: {epochs: 5}\n")
    ckpt = tmp_path / "c.pt"
    assert _run(["train", str(data), "-o", str(ckpt), "--config", str(cfg)], capsys)[0] == 0
    attacked = tmp_path / "att.extxyz"
    code, _ = _run(["attack", str(ckpt), str(data), "-o", str(attacked), "--steps", "5"], capsys)
    assert code == 0
    frames = ase.io.read(attacked, ":")
    assert len(frames) == 12 and "uncertainty" in frames[0].info
    labelled = tmp_path / "lab.extxyz"
    code, out = _run(["label", str(attacked), "-o", str(labelled), "--oracle",
                      '{"type": "emt"}'], capsys)
    assert code == 0 and "12 labelled" in out.out
    assert ase.io.read(labelled, ":")[0].get_potential_energy() is not None
    report = tmp_path / "stab.json"
    code, out = _run(["stability", str(ckpt), str(data), "--runs", "2", "--steps", "20",
                      "-o", str(report)], capsys)
    assert code == 0 and "of 24 runs stable" in out.out
    assert len(json.loads(report.read_text())["reason"]) == 24


def test_help_is_instant_and_lists_commands():
    out = subprocess.run([sys.executable, "-m", "advsample.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "attack", "train", "label", "stability", "status", "report"):
        assert cmd in out
