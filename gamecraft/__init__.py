"""gamecraft: Hunyuan-GameCraft-1.0 inference, packaged for Cog.

The library knows nothing about Cog; ``predict.py`` at the repository root is the API layer.

Inputs and camera: ``actions`` (action/speed grammar), ``camera`` (poses, Plücker embeddings),
``trajectory`` (custom camera paths), ``preview`` (top-down PNG), ``image`` (start image preprocessing).
Models: ``model`` (the MM-DiT + CameraNet and checkpoint loading), ``vae``, ``text``, ``scheduler``,
``weights`` / ``tiny_weights`` / ``random_weights`` (layouts, tiny and full-size random weights),
``engine`` (loaded models on a device), ``offload`` (pinned host copies).
Generation: ``presets``, ``sampling`` (one chunk's denoising loop), ``session`` (chunk after chunk),
``state`` (resumable world files), ``generate`` (one request → files), ``media`` (mp4 I/O),
``budget`` (time estimates). Checks: ``parity`` (``python -m gamecraft.parity GOLDEN_DIR [SECTION ...]``).
"""

__version__ = "0.1.0"
