"""The networks, pure modules without I/O: the GameCraft transformer (MM-DiT + CameraNet), the causal 3D VAE
wrapper and the text encoders' prompt encoding. Loading them from files is :mod:`gamecraft.weights`' job.

Public API (names are stable)::

    TransformerConfig                  architecture dataclass (.production(), .tiny(), .from_golden(dict))
    GameCraftTransformer(config, dtype, device)   the model; forward(PassInputs, sp=None)
    PassInputs                         the inputs of one pass (tensors with shapes and units, kernel, cache)
    StepCache                          explicit holder of the step-cache ("deepcache") features
    rope_tables(T, h, w, config)       RoPE (cos, sin) tables of the image tokens
    text_lengths_from_mask(mask)       per-row valid text lengths (call once per prediction)
    random_state_dict(config, seed, dtype=)   official-layout random weights
    init_random_(model, seed, device=)        random init in place (materialises meta models)

Sub-modules: ``attention`` (kernels, mask-free segment semantics), ``blocks``/``layers``/``refiner``/
``cameranet`` (the transformer's parts), ``compile`` (regional torch.compile), ``fp8`` (go_fast linears),
``vae`` + ``vae_config`` + ``vae_tiles`` (diffusers' HunyuanVideo VAE with the reference's tiling),
``text`` (LLaVA-Llama-3 + CLIP prompt encoding).
"""

from .attention import ATTENTION_BACKENDS, AttentionBackend, text_lengths_from_mask
from .config import TransformerConfig
from .init import init_random_, random_state_dict
from .pass_inputs import PassInputs, StepCache
from .rope import rope_tables
from .transformer import FLOAT32_PARAMETER_PREFIXES, GameCraftTransformer, parameter_dtype

__all__ = [
    "ATTENTION_BACKENDS",
    "AttentionBackend",
    "FLOAT32_PARAMETER_PREFIXES",
    "GameCraftTransformer",
    "PassInputs",
    "StepCache",
    "TransformerConfig",
    "init_random_",
    "parameter_dtype",
    "random_state_dict",
    "rope_tables",
    "text_lengths_from_mask",
]
