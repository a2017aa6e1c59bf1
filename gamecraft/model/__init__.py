"""GameCraft transformer (MM-DiT + CameraNet) and official checkpoint loading.

Public API (names are stable)::

    TransformerConfig                  architecture dataclass (.production(), .tiny(), .from_golden(dict))
    GameCraftTransformer(config, dtype, device)   the model; forward(x, t, text_states, text_mask,
                                       text_states_2, cam_latents=|camera_tokens=, rope=, text_lengths=,
                                       cache=, use_cache=, attention_backend=)
    StepCache                          explicit holder of the step-cache ("deepcache") features
    rope_tables(T, h, w, config)       RoPE (cos, sin) tables of the image tokens
    text_lengths_from_mask(mask)       per-row valid text lengths (call once per prediction)
    load_transformer(path, config, dtype=, device=, cache_dir=)   strict official checkpoint load
    load_checkpoint_state_dict(path, config, device=, dtype=, cache_dir=)   checked state dict (cache aware)
    read_official_checkpoint(path)     the state dict inside an official .pt (weights_only)
    expected_shapes(config), check_state_dict(sd, expected)   the strict key/shape check
    save_official_checkpoint(sd, path, key="module")
    random_state_dict(config, seed, dtype=)   official-layout random weights
    init_random_(model, seed, device=)        random init in place (materialises meta models)
    CheckpointError, CheckpointMismatchError  (ValueError subclasses)
"""

from .attention import ATTENTION_BACKENDS, AttentionBackend, text_lengths_from_mask
from .config import TransformerConfig
from .loading import (
    CheckpointError,
    CheckpointMismatchError,
    cache_path_for,
    check_state_dict,
    expected_shapes,
    init_random_,
    load_checkpoint_state_dict,
    load_transformer,
    random_state_dict,
    read_official_checkpoint,
    save_official_checkpoint,
)
from .rope import rope_tables
from .transformer import FLOAT32_PARAMETER_PREFIXES, GameCraftTransformer, StepCache, parameter_dtype

__all__ = [
    "ATTENTION_BACKENDS",
    "AttentionBackend",
    "CheckpointError",
    "CheckpointMismatchError",
    "FLOAT32_PARAMETER_PREFIXES",
    "GameCraftTransformer",
    "StepCache",
    "TransformerConfig",
    "cache_path_for",
    "check_state_dict",
    "expected_shapes",
    "init_random_",
    "load_checkpoint_state_dict",
    "load_transformer",
    "parameter_dtype",
    "random_state_dict",
    "read_official_checkpoint",
    "rope_tables",
    "save_official_checkpoint",
    "text_lengths_from_mask",
]
