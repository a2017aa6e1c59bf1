"""Cog API layer for Hunyuan-GameCraft-1.0 (inputs, validation, outputs).

Placeholder until the generation pipeline lands: validates the action inputs exactly as the real
predictor will and returns the camera-path preview. Heavy imports stay inside ``setup()``/``predict()``
so that Cog's schema tooling can read this file on a machine without CUDA.
"""

from __future__ import annotations

import tempfile
from typing import Iterator

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def setup(self) -> None:
        pass

    def predict(
        self,
        actions: str = Input(
            description='JSON list of actions, one per 33-frame chunk: w/a/s/d, left_rot/right_rot/up_rot/down_rot, '
                        'idle, aliases such as "forward" or "look_left", or combined like "w+left_rot".',
            default='["w", "s", "d", "a"]',
        ),
        action_speeds: str = Input(
            description="JSON list of speeds, one per action: translation units (0–3) or degrees per chunk (0–90); "
                        "a combined action takes a list like [0.4, 20].",
            default="[0.2, 0.2, 0.2, 0.2]",
        ),
    ) -> Iterator[Path]:
        from gamecraft.actions import parse_actions
        from gamecraft.camera import chunk_poses
        from gamecraft.preview import save_preview

        segments = parse_actions(actions, action_speeds)
        out = Path(tempfile.mkdtemp(prefix="gamecraft-")) / "camera_preview.png"
        save_preview(out, [chunk_poses(s) for s in segments], [s.describe() for s in segments])
        yield Path(out)
