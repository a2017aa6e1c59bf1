"""The loaded models on a device: :class:`Engine` is the one interface every caller uses (sessions, the warm-up,
the predictor, the CLI); :class:`GameCraftEngine` implements it on one GPU (or the CPU) from a weights
directory, ``gamecraft.parallel.ParallelEngine`` over several GPUs. :meth:`Engine.warm_up` compiles and times
every :class:`PassShape` the configured presets run. A transformer (:class:`Transformer`) takes one
:class:`PassInputs` per pass (defined beside the model, :mod:`gamecraft.model.pass_inputs`)."""

from .base import Engine, EngineBusy, EngineFailed, PassInputs, PassShape, Transformer, WarmUp
from .local import EngineConfig, GameCraftEngine

__all__ = [
    "Engine",
    "EngineBusy",
    "EngineConfig",
    "EngineFailed",
    "GameCraftEngine",
    "PassInputs",
    "PassShape",
    "Transformer",
    "WarmUp",
]
