"""A committee of M energy models: energies [M, B], forces [M, N, d], and their spread.

All members are evaluated on the same batch and their forces come from ONE backward pass:
positions are expanded to [M, N, d], member m reads slice m, and the gradient of the summed
energies with respect to that expanded tensor holds every member's forces at once.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advsample.models import build_model, model_name
from advsample.models.base import MemberGraph
from advsample.neighbors import Pairs
from advsample.structures import Batch


class CheckpointError(ValueError):
    """A committee checkpoint that cannot be loaded: not a torch file, not a committee, or
    written in another checkpoint format. The message is one line naming the file."""


class _UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint refused by weights-only loading; still a ``pickle.UnpicklingError`` for
    callers that catch that."""


@dataclass
class CommitteeOutput:
    """energy: [M, B] eV; forces: [M, N, d] eV/Å (None when not asked for)."""

    energy: torch.Tensor
    forces: torch.Tensor | None

    @property
    def mean_energy(self) -> torch.Tensor:
        """Committee-mean energy [B] (eV)."""
        return self.energy.mean(0)

    @property
    def mean_forces(self) -> torch.Tensor:
        """Committee-mean forces [N, d] (eV/Å); only when forces were computed."""
        return self.forces.mean(0)


class Committee(nn.Module):
    """M independently initialised energy models of the same architecture.

    Uncertainty needs M >= 2; a committee of one is how a single member is trained on its own
    (see ``train.fit_members_separately``).
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 1:
            raise ValueError("a committee needs at least one member")
        self.members = nn.ModuleList(members)
        self.vectorize = True  # evaluate members together where the model supports it
        self._stack_cache: tuple | None = None  # (key, stacked weights) see stacked()
        self._named: list[dict[str, torch.Tensor]] | None = None  # see member_tensors()
        self._parameter_names: list[str] = []  # see parameter_names()
        # torch.compile: the energy of evaluation-mode passes (NN-MD, evaluation), and the
        # attack and training steps with their second derivatives taken inside the compiled
        # graph (advsample.compiled). Compiling takes about a minute per kind of pass on a
        # CPU, once per process, and pays off over a run's thousands of steps.
        self.compile = False
        self._compiled = None
        # structures evaluated so far (one structure's energies and forces, or objective and
        # its gradient, for all members counts 1): the NN cost of sampling in units that do
        # not depend on the machine or on what else runs on it
        self.evaluated = 0

    def _apply(self, fn, *args, **kwargs):
        """Module conversions (``.to``, ``.float``, ...) may replace tensors: forget the
        cached stack and tensor maps."""
        self._stack_cache, self._named = None, None
        return super()._apply(fn, *args, **kwargs)

    def weights_changed(self) -> None:
        """Forget the cached stack of weights (see :meth:`stacked`). Needed after in-place
        updates that do not bump tensor versions: the fused Adam kernel is one."""
        self._stack_cache = None

    @classmethod
    def build(cls, model: str, size: int, seed: int = 0, **hyperparameters) -> Committee:
        """``size`` members of model ``model``, member m initialised with seed ``seed + m``."""
        members = []
        for m in range(size):
            torch.manual_seed(seed + m)
            members.append(build_model(model, **hyperparameters))
        return cls(members)

    @property
    def size(self) -> int:
        """Number of members M."""
        return len(self.members)

    @property
    def device(self) -> torch.device:
        """Where the members' parameters are (move them with ``.to(device)``)."""
        return next(self.parameters()).device

    @property
    def vectorized(self) -> bool:
        """True when all members are evaluated together (``vectorize`` is on and the model
        type supports it: PaiNN, MLP); False: one member after another (MACE)."""
        first = self.members[0]
        return (self.vectorize and getattr(type(first), "supports_members", False)
                and all(type(m) is type(first) for m in self.members))

    @property
    def compiles_derivatives(self) -> bool:
        """True when attack and training steps go through :mod:`advsample.compiled`
        (``compile`` is on and the committee is vectorized)."""
        return self.compile and self.vectorized

    def forward(
        self, batch: Batch, forces: bool = True, create_graph: bool = False
    ) -> CommitteeOutput:
        """Energies of every member; forces by autograd when asked.

        create_graph keeps the graph of the forces so a loss built on them (the attack
        objective, a force-matching loss) can be differentiated again. In evaluation mode
        a vectorized committee reads its weights from a cached stack: gradients then reach
        positions (and cells), not the members' parameters; training mode keeps both.
        With ``compile``, evaluation-mode forces of positions that need no gradient (NN-MD,
        evaluation) come from the compiled graph (:func:`advsample.compiled.committee_forces`).
        """
        create_graph = create_graph or self.training
        self.evaluated += batch.n_structures
        if not self.vectorized:
            return self._forward_one_by_one(batch, forces, create_graph)
        if (forces and self.compiles_derivatives and not (create_graph or self.training)
                and not batch.positions.requires_grad):
            from advsample.compiled import committee_forces

            return CommitteeOutput(*committee_forces(self, batch))
        first = self.members[0]
        pairs = first.pairs(batch)  # one neighbour list for all members
        with torch.enable_grad() if forces else contextlib.nullcontext():
            pos = batch.positions
            if forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            expanded = pos.unsqueeze(0).expand(self.size, *pos.shape)
            graph = MemberGraph.shared(batch, expanded, pairs)
            weights = self.stacked(differentiable=self.training)
            energy_fn = type(first).members_energy
            if self.compile and not (create_graph or self.training):  # stress, energies
                energy_fn = self._compiled_energy()
            energy = energy_fn(first, weights, graph)  # [M, B]
            if not forces:
                return CommitteeOutput(energy, None)
            (grad,) = torch.autograd.grad(energy.sum(), expanded, create_graph=create_graph)
        return CommitteeOutput(energy, -grad)

    def member_tensors(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters, then its buffers, by name (the same names and order for
        every member). Built once: walking the module trees costs more than a step."""
        if self._named is None:
            self._named = [dict(m.named_parameters()) | dict(m.named_buffers())
                           for m in self.members]
            self._parameter_names = [n for n, _ in self.members[0].named_parameters()]
        return self._named[k]

    def parameter_names(self) -> list[str]:
        """Names of a member's parameters (the first entries of :meth:`member_tensors`)."""
        self.member_tensors(0)
        return self._parameter_names

    def stacked(self, members: list[int] | None = None, differentiable: bool = True
                ) -> dict[str, torch.Tensor]:
        """The chosen members' (default: all) parameters and buffers stacked, name -> [M, ...].

        ``differentiable``: a fresh stack through which gradients reach each member's own
        parameters (training). Otherwise (evaluation, attacks, NN-MD: gradients with respect
        to positions only) a detached stack is cached until a parameter or buffer changes
        (tracked by tensor versions and storage, or :meth:`weights_changed`), so a step does
        not copy the weights again.
        """
        chosen = [self.member_tensors(k) for k in (range(self.size) if members is None
                                                   else members)]

        def stack() -> dict[str, torch.Tensor]:
            """The chosen members' tensors stacked by name, [M, ...]."""
            return {name: torch.stack([t[name] for t in chosen]) for name in chosen[0]}

        if differentiable:
            return stack()
        tensors = [t for named in chosen for t in named.values()]
        key = (tuple(id(named) for named in chosen), tuple(t._version for t in tensors),
               tuple(t.data_ptr() for t in tensors))
        if self._stack_cache is None or self._stack_cache[0] != key:
            with torch.no_grad():
                self._stack_cache = (key, stack())
        return self._stack_cache[1]

    def _compiled_energy(self):
        """``members_energy`` through torch.compile (built once per committee; shapes are
        dynamic, so new neighbour counts do not recompile)."""
        if self._compiled is None:
            self._compiled = torch.compile(type(self.members[0]).members_energy, dynamic=True)
        return self._compiled

    def _forward_one_by_one(self, batch: Batch, forces: bool, create_graph: bool
                            ) -> CommitteeOutput:
        """:meth:`forward` with a Python loop over members (models without members_network)."""
        if not forces:
            return CommitteeOutput(torch.stack([m(batch) for m in self.members]), None)
        with torch.enable_grad():
            pos = batch.positions
            if not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            expanded = pos.unsqueeze(0).expand(self.size, *pos.shape)
            energy = torch.stack(
                [m(batch.with_positions(expanded[i])) for i, m in enumerate(self.members)]
            )
            (grad,) = torch.autograd.grad(energy.sum(), expanded, create_graph=create_graph)
        return CommitteeOutput(energy, -grad)

    def forward_members(self, members: list[int], batches: list[Batch],
                        pairs: list[Pairs] | None) -> tuple[CommitteeOutput, torch.Tensor]:
        """Member ``members[k]`` on its own ``batches[k]`` (equal structure counts B), all at
        once, forces with their graph kept (for training). ``pairs[k]``: the pairs of
        ``batches[k]`` (None: the models need none). Returns energies [K, B] (eV), forces
        [K, N, d] (eV/Å) padded to the largest batch, and the bool mask [K, N] of real atoms.
        """
        first = self.members[members[0]]
        graph, real = MemberGraph.padded(batches, pairs)
        with torch.enable_grad():
            positions = graph.positions.detach().requires_grad_(True)
            energy = type(first).members_energy(first, self.stacked(members),
                                                graph._replace(positions=positions))
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
        return CommitteeOutput(energy, -grad), real

    # ------------------------------------------------------------ checkpoint
    def state(self) -> dict:
        """A checkpoint made of tensors, numbers and strings only (loads with weights_only)."""
        first = self.members[0]
        return {
            "format": "advsample.committee/1",
            "model": model_name(first),
            "hyperparameters": dict(first.hyperparameters),
            "members": [m.state_dict() for m in self.members],
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`state` to ``path`` atomically (via a temporary file; parent folders are
        created). The state's ``"format"`` (``"advsample.committee/1"``) holds the checkpoint
        format version that :meth:`load` checks. A failed write (full disk, read-only folder)
        raises OSError naming ``path`` and leaves no temporary file behind.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            with open(tmp, "wb") as f:  # a file object: torch then raises OSError, not
                torch.save(self.state(), f)  # a RuntimeError, when the disk is full
            tmp.replace(path)  # atomic: a killed save never leaves a half-written checkpoint
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # name the target
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @classmethod
    def from_state(cls, state: dict) -> Committee:
        """The committee described by a :meth:`state` checkpoint, on the CPU in training mode;
        ValueError for any other dict.
        """
        if state.get("format") != "advsample.committee/1":
            raise ValueError("not an advsample committee checkpoint")
        members = []
        for sd in state["members"]:
            m = build_model(state["model"], **state["hyperparameters"])
            m.load_state_dict(sd)
            members.append(m)
        return cls(members)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Committee:
        """The committee saved at ``path`` on ``device``, in evaluation mode.

        Loads with ``weights_only`` (tensors, numbers and strings; never code). Raises
        FileNotFoundError when ``path`` does not exist, and :class:`CheckpointError` (one line
        naming the file) when it is not a torch file, holds something other than a committee,
        or was written in a checkpoint format other than 1. A checkpoint without a
        ``"format"`` key is read as format 1. A file refused by weights-only loading raises an
        error that is both a CheckpointError and a ``pickle.UnpicklingError``.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"committee checkpoint {path} does not exist")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory, not a committee checkpoint")
        try:
            with warnings.catch_warnings():  # what plain pickles (not checkpoints) trigger
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(path, weights_only=True, map_location="cpu")
        except (PermissionError, MemoryError):
            raise  # the environment, not the file's content
        except pickle.UnpicklingError as exc:
            detail = str(exc).partition("WeightsUnpickler error:")[2].split()
            detail = " ".join(detail).partition(" Check the documentation")[0]
            if "Unsupported global" in detail:
                detail = re.sub(r" was not an allowed global.*", "", detail)
                raise _UnsafeCheckpointError(
                    f"{path}: not loaded: it holds Python objects other than tensors, numbers "
                    f"and strings (Weights only load failed: {detail})") from None
            raise _UnsafeCheckpointError(
                f"{path}: not a committee checkpoint (not a file written by torch.save; "
                f"Weights only load failed: {detail or 'unreadable'})") from None
        except Exception as exc:  # truncated or foreign files: EOFError, OSError, zip errors
            detail = " ".join(str(exc).split()).split(". ")[0][:120]
            detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            raise CheckpointError(f"{path}: not a committee checkpoint (not a file written by "
                                  f"torch.save, or truncated; {detail})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: not a committee checkpoint (holds a "
                                  f"{type(state).__name__}, not a dict)")
        reads = 1
        fmt = state.get("format", f"advsample.committee/{reads}")
        match = re.fullmatch(r"advsample\.committee/(\d+)", fmt) if isinstance(fmt, str) else None
        version = fmt if isinstance(fmt, int) and not isinstance(fmt, bool) else (
            int(match[1]) if match else None)
        if version is None:
            raise CheckpointError(f"{path}: not an advsample committee checkpoint "
                                  f"(format {fmt!r})")
        if version != reads:
            raise CheckpointError(f"{path}: committee checkpoint format {version}, this "
                                  f"advsample reads format {reads}")
        kinds = {"model": str, "hyperparameters": dict, "members": list}
        missing = [k for k in kinds if k not in state]
        if missing:
            keys = sorted(map(str, state))
            keys = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise CheckpointError(f"{path}: not a committee checkpoint (no "
                                  f"{', '.join(missing)}; keys: {keys or 'none'})")
        wrong = [f"{k} is {type(state[k]).__name__}, not {kind.__name__}"
                 for k, kind in kinds.items()
                 if not isinstance(state[k], kind)]
        members = state["members"]
        if isinstance(members, list) and not (members and all(isinstance(m, dict)
                                                              for m in members)):
            wrong.append("members is not a non-empty list of state dicts")
        if wrong:
            raise CheckpointError(f"{path}: not a committee checkpoint ({'; '.join(wrong)})")
        try:
            committee = cls.from_state({**state, "format": f"advsample.committee/{reads}"})
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())
            detail = detail if len(detail) <= 200 else detail[:200] + " ..."
            raise CheckpointError(f"{path}: not a usable committee checkpoint "
                                  f"({detail})") from None
        return committee.to(device).eval()
