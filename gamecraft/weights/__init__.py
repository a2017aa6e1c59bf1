"""The official weights: where they live (``layout``), downloading them (``download``), a prepared
directory's manifest (``manifest``) and its fetch from the owner's storage (``fetch``), reading them into the
networks of :mod:`gamecraft.model` (``transformer`` with its safetensors cache, ``vae``, ``text``) and keeping
modules in pinned host memory while they are not on the GPU (``offload``).

Every ``.pt`` is read with ``torch.load(weights_only=True)`` and a strict key/shape check; nothing is unpickled.
"""

from .download import download_weights
from .layout import (
    DEFAULT_LAYOUT,
    REPO_ID,
    TRANSFORMER_CONFIG_FILE,
    VARIANTS,
    MissingWeightsError,
    WeightsLayout,
    check_layout,
    smoke_run_reason,
    transformer_config,
)
from .offload import PinnedOffload
from .text import load_text_encoders
from .transformer import (
    CheckpointError,
    CheckpointMismatchError,
    cache_is_current,
    cache_path_for,
    check_state_dict,
    expected_shapes,
    load_checkpoint_state_dict,
    load_transformer,
    read_official_checkpoint,
    save_official_checkpoint,
    write_cache,
)
from .vae import load_vae

__all__ = [
    "DEFAULT_LAYOUT",
    "REPO_ID",
    "TRANSFORMER_CONFIG_FILE",
    "VARIANTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "MissingWeightsError",
    "PinnedOffload",
    "WeightsLayout",
    "cache_is_current",
    "cache_path_for",
    "check_layout",
    "check_state_dict",
    "download_weights",
    "expected_shapes",
    "load_checkpoint_state_dict",
    "load_text_encoders",
    "load_transformer",
    "load_vae",
    "read_official_checkpoint",
    "save_official_checkpoint",
    "smoke_run_reason",
    "transformer_config",
    "write_cache",
]
