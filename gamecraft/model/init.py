"""Random weights in the official layout (tests, tiny checkpoints, benchmarks): pure functions, no I/O."""

from __future__ import annotations

import math

import torch

from .config import TransformerConfig
from .transformer import GameCraftTransformer


@torch.no_grad()
def init_random_(model: torch.nn.Module, seed: int, device: torch.device | str | None = None) -> torch.nn.Module:
    """Fill every parameter with the golden README's rule (in place; materialises meta models on
    ``device`` first, without touching the CPU):

    matrices / conv kernels ``N(0, 1/fan_in)``, biases ``0.1 * N(0, 1)``, other 1-D parameters
    (norm weights, ``camera_net.scale``) ``1 + 0.1 * N(0, 1)``. Parameters are drawn in
    state-dict order from one ``torch.Generator`` on the target device.
    """
    if any(p.is_meta for p in model.parameters()):
        model.to_empty(device=device or "cpu")
    elif device is not None:
        model.to(device)
    target = next(model.parameters()).device
    generator = torch.Generator(device=target).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            fan_in = math.prod(param.shape[1:])
            param.normal_(0.0, fan_in**-0.5, generator=generator)
        elif name.endswith("bias"):
            param.normal_(0.0, 0.1, generator=generator)
        else:
            param.normal_(1.0, 0.1, generator=generator)
    return model


def random_state_dict(
    config: TransformerConfig, seed: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Random weights with official key names and shapes (see :func:`init_random_`), on CPU.

    ``dtype`` applies to every parameter except the float32 ones of the dtype policy
    (``final_layer.linear.*``, ``camera_net.*``), as an official checkpoint would store them.
    """
    model = init_random_(GameCraftTransformer(config, dtype=dtype, device="meta"), seed, device="cpu")
    return {k: v.detach() for k, v in model.state_dict().items()}
