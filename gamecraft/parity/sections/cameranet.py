"""CameraNet parity: outputs, the zero-camera passes, the DiT camera tokens and every stage."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from gamecraft.model.cameranet import CameraNet, camera_tokens, compress_time
from gamecraft.parity import Comparison, compare, load_manifest, load_tensors

SECTION = "cameranet"
WEIGHT_PREFIX = "weights/camera_net."


def build_camera_net(golden_dir: Path) -> tuple[CameraNet, dict[str, torch.Tensor]]:
    """CameraNet from the manifest's constructor with the golden weights (strict), and all tensors."""
    ctor = load_manifest(golden_dir, SECTION)["constructor"]
    tensors = load_tensors(golden_dir, SECTION)
    net = CameraNet(
        ctor["in_channels"],
        ctor["downscale_coef"],
        ctor["out_channels"],
        tuple(ctor["patch_size"]),
        ctor["hidden_size"],
        dtype=torch.float32,
    )
    weights = {k[len(WEIGHT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIX)}
    net.load_state_dict(weights, strict=True)
    return net.eval(), tensors


def stages(net: CameraNet, plucker: torch.Tensor) -> dict[str, torch.Tensor]:
    """The forward's intermediates under the golden's ``steps/*`` names."""
    batch = plucker.shape[0]
    out = {}
    x = out["steps/1_pixel_unshuffle"] = net.unshuffle(plucker.flatten(0, 1))
    x = out["steps/2_encode_first"] = net.encode_first(x)
    x = out["steps/3_compress_time_a"] = compress_time(x, batch)
    x = out["steps/4_encode_second"] = net.encode_second(x)
    x = out["steps/5_compress_time_b"] = compress_time(x, batch)
    out["steps/6_final_proj"] = net.final_proj(x)
    out["steps/7_camera_in_before_scale"] = net.camera_in(net.encode(plucker))
    return out


@torch.no_grad()
def check(golden_dir: Path) -> Iterable[Comparison]:
    net, g = build_camera_net(golden_dir)
    plucker = g["input_plucker"]
    zeros = torch.zeros_like(plucker)
    actual = {
        "out_cond": net(plucker),
        "out_zeros33": net(zeros),
        "out_zeros4": net(zeros[:, :4]),
    }
    for name in sorted(k for k in g if k.startswith("camera_latents_latent_len")):
        latent_frames = int(name.rsplit("len", 1)[1])
        actual[name] = camera_tokens(net, plucker, latent_frames)
    actual.update(stages(net, plucker))
    for name in sorted(k for k in g if not k.startswith(WEIGHT_PREFIX) and k != "input_plucker"):
        if name not in actual:
            yield Comparison(SECTION, name, float("inf"), 0.0, 0.0, False, "no check implemented")
            continue
        yield compare(SECTION, name, actual[name], g[name])
