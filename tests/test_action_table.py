"""gamecraft.pipeline.actions.action_table(): the vocabulary the controller page gets from its server is the
parser's own."""

from __future__ import annotations

import json

import pytest

from gamecraft.media.video import DEFAULT_FPS
from gamecraft.pipeline.actions import ACTIONS, ALIASES, IDLE, ActionError, action_table, parse_actions
from gamecraft.pipeline.camera import FRAMES_PER_CHUNK
from gamecraft.specs import geometry


def test_table_is_json_and_lists_every_name_the_parser_knows():
    table = json.loads(json.dumps(action_table()))
    names = [a["name"] for a in table["actions"]]
    assert names == [*ACTIONS, IDLE]
    aliases = {alias: a["name"] for a in table["actions"] for alias in a["aliases"]}
    assert aliases == ALIASES
    assert table["axes"] == ["forward", "strafe", "yaw", "pitch"]
    assert {a["axis"] for a in table["actions"] if a["axis"]} == set(table["axes"])
    assert table["chunk"] == {"frames": FRAMES_PER_CHUNK, "fps": DEFAULT_FPS, "seconds": FRAMES_PER_CHUNK / DEFAULT_FPS}
    assert table["chunk"] == {"frames": 33, "fps": 25, "seconds": 1.32}
    assert geometry.FRAMES_PER_CHUNK == FRAMES_PER_CHUNK and geometry.FPS == DEFAULT_FPS


@pytest.mark.parametrize("entry", action_table()["actions"], ids=lambda e: e["name"])
def test_every_name_alias_and_range_means_what_the_parser_does(entry):
    low, high = entry["range"]
    for name in [entry["name"], *entry["aliases"], entry["name"].upper()]:
        if entry["kind"] == "idle":
            assert parse_actions([name], [0])[0].motions == ()
            with pytest.raises(ActionError, match="must be 0"):
                parse_actions([name], [0.1])
            continue
        motion = parse_actions([name], [high])[0].motions[0]
        assert motion.key == entry["name"] and motion.axis == entry["axis"]
        assert motion.signed == entry["sign"] * high
        assert motion.is_rotation == (entry["kind"] == "look")
        parse_actions([name], [low])
        with pytest.raises(ActionError, match="maximum"):
            parse_actions([name], [high + 0.01])
        with pytest.raises(ActionError, match=">= 0"):
            parse_actions([name], [low - 0.01])
    assert entry["range"][0] <= entry["sensible"][0] <= entry["sensible"][1] <= entry["range"][1]
    assert entry["description"]
