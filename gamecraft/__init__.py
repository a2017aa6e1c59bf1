"""gamecraft: Hunyuan-GameCraft-1.0 inference, packaged for Cog.

The library knows nothing about Cog; ``predict.py`` at the repository root is the API layer.
Modules:

* ``actions``    – parse the user's action / speed lists into typed per-chunk segments.
* ``camera``     – segments → per-frame camera poses → Plücker embeddings (reference numerics).
* ``trajectory`` – custom camera paths (RealEstate10K text rows, JSON camera-to-world matrices).
* ``preview``    – a top-down PNG of the camera path.
* ``parity``     – ``python -m gamecraft.parity GOLDEN_DIR [SECTION ...]``.
"""

__version__ = "0.1.0"
