"""Energy models: ``torch.nn.Module`` mapping a Batch to energies [B] in eV.

Models are looked up by name so checkpoints hold a name and hyperparameters, never code.
Optional backends (MACE) are imported only when asked for.
"""

from __future__ import annotations

import importlib

_REGISTRY = {
    "mlp": ("advsample.models.mlp", "MLPEnergy"),
    "painn": ("advsample.models.painn", "PaiNN"),
    "mace": ("advsample.models.mace", "MACEEnergy"),
}


def model_class(name: str):
    """The EnergyModel subclass registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {sorted(_REGISTRY)}")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module), attr)


def model_name(model) -> str:
    """The registry name of ``model``'s class (what a checkpoint stores); ValueError if the class is
    not registered.
    """
    for name, (module, attr) in _REGISTRY.items():
        if type(model).__module__ == module and type(model).__name__ == attr:
            return name
    raise ValueError(f"model {type(model).__name__} is not registered")


def build_model(name: str, **hyperparameters):
    """A new model of registry name ``name`` constructed with ``hyperparameters``."""
    return model_class(name)(**hyperparameters)
