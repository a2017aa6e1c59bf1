"""gamecraft: Hunyuan-GameCraft-1.0 inference, packaged for Cog.

The library knows nothing about Cog; ``predict.py`` at the repository root is the API layer. Sub-packages,
from the top layer down (imports point down only; ``pyproject.toml``'s import-linter contracts; each
package's docstring says what it owns):

``serving`` (the configuration, the service plan, building and warming the service, time budget, one
request → events and files), ``parallel`` (several GPUs) and ``testing`` (tiny and full-size random
weights, input writers), ``engine`` (the loaded models on a device), ``media`` (start images, mp4 and PNG
files), ``pipeline`` (actions, camera paths, presets, scheduler, one chunk's sampling, the world session
and its state files), ``weights`` (layout, download, checkpoint loading, pinned offload), ``model`` (the
transformer, VAE and text encoders as pure modules), ``specs`` (chunk geometry, worker specs). Beside
them: ``ui`` (the controller page), ``parity`` (``python -m gamecraft.parity GOLDEN_DIR [SECTION ...]``)
and the CLI (``python -m gamecraft``).
"""

__version__ = "0.1.0"
