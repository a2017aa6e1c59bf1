"""The loaded models on a device: :class:`Engine` is the one interface every caller uses (sessions, the warm-up,
the predictor, the CLI); :class:`GameCraftEngine` implements it on one GPU (or the CPU) from a weights
directory, ``gamecraft.parallel.ParallelEngine`` over several GPUs. :meth:`Engine.warm_up` compiles and times
every :class:`PassShape` the configured presets run."""

from .base import Engine, PassShape, Transformer, WarmUp
from .local import EngineConfig, GameCraftEngine

__all__ = ["Engine", "EngineConfig", "GameCraftEngine", "PassShape", "Transformer", "WarmUp"]
