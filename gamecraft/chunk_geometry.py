"""The chunk geometry every layer shares (dependency-free, so the action parser, the camera math, the
video writers and the controller page read the same numbers).

One action = one chunk of ``FRAMES_PER_CHUNK`` video frames, played at the model's cadence of
``MODEL_FPS`` frames per second: ``CHUNK_SECONDS`` = 33 / 25 = 1.32 s of video per chunk.
"""

from __future__ import annotations

FRAMES_PER_CHUNK = 33
MODEL_FPS = 25
CHUNK_SECONDS = FRAMES_PER_CHUNK / MODEL_FPS
