"""The loaded models on a device: :class:`Engine` is the one interface every caller uses (sessions, the budget's
warm-up, the predictor, the CLI); :class:`GameCraftEngine` implements it on one GPU (or the CPU) from a weights
directory, ``gamecraft.parallel.ParallelEngine`` over several GPUs."""

from .local import EngineConfig, GameCraftEngine

__all__ = ["EngineConfig", "GameCraftEngine"]
