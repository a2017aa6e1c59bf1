"""The chunk geometry, defined once. Every module that needs one of these numbers imports it from here, and
the controller page gets them from its server (``gamecraft.pipeline.actions.action_table``).

A chunk is 33 video frames (1.32 s at the model's 25 fps). The causal 3D VAE compresses space by 8 and time
by 4 (1 + 4k frames ↔ 1 + k latents), so a chunk's 33 new frames are 9 latent frames; a first chunk's pass
sees 1 known + 9 new latent frames (10), a later chunk's 9 known + 9 new (18).
"""

from __future__ import annotations

FRAMES_PER_CHUNK = 33
FPS = 25  # the model's cadence (frames per second of its training videos)
SPATIAL_COMPRESSION = 8  # VAE: latent height/width = pixels / 8
TEMPORAL_COMPRESSION = 4  # VAE: 1 + 4k frames <-> 1 + k latent frames
LATENT_CHANNELS = 16
NEW_LATENT_FRAMES = (FRAMES_PER_CHUNK - 1) // TEMPORAL_COMPRESSION + 1  # 9
FIRST_CHUNK_LATENT_FRAMES = 1 + NEW_LATENT_FRAMES  # 10: the start image's latent + 9 new
LATER_CHUNK_LATENT_FRAMES = 2 * NEW_LATENT_FRAMES  # 18: the previous chunk's 9 + 9 new
PASS_LATENT_FRAMES = (FIRST_CHUNK_LATENT_FRAMES, LATER_CHUNK_LATENT_FRAMES)
DEFAULT_SIZE = (704, 1216)  # (height, width) in pixels of the reference's videos
MAX_SEED = 2**31 - 1


def latent_size(height: int, width: int) -> tuple[int, int]:
    """Latent (h, w) of a ``height``×``width`` video; ``ValueError`` unless both are multiples of 16."""
    if height % 16 or width % 16:
        raise ValueError(f"height and width must be multiples of 16, got {height}×{width}")
    return height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION
