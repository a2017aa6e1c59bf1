"""The action/speed grammar: valid forms and the exact message of every malformed input."""

from __future__ import annotations

import json

import pytest

from gamecraft.pipeline.actions import ActionError, Motion, Segment, parse_actions
from gamecraft.testing.inputs import to_json_lists


def test_official_names_and_single_speeds():
    segments = parse_actions(
        '["w", "s", "a", "d", "left_rot", "right_rot", "up_rot", "down_rot"]', "[0.2, 0.3, 0.4, 0.5, 10, 11, 12, 13]"
    )
    assert [s.label for s in segments] == ["w", "s", "a", "d", "left_rot", "right_rot", "up_rot", "down_rot"]
    assert segments[0].forward == pytest.approx(0.2)
    assert segments[1].forward == pytest.approx(-0.3)
    assert segments[2].strafe == pytest.approx(-0.4)
    assert segments[3].strafe == pytest.approx(0.5)
    assert segments[4].yaw_degrees == 10 and segments[5].yaw_degrees == -11
    assert segments[6].pitch_degrees == 12 and segments[7].pitch_degrees == -13


def test_aliases_case_and_whitespace():
    segments = parse_actions(
        ["Forward", " look_left ", "STRAFE_RIGHT", "back", "tilt_down", "stay"], [0.2, 15, 0.1, 0.3, 5, 0]
    )
    assert [s.label for s in segments] == ["w", "left_rot", "d", "s", "down_rot", "idle"]
    assert segments[-1].motions == ()


def test_combined_actions_with_list_and_object_speeds():
    segments = parse_actions(
        '["w+left_rot", "look_up + d", "w+d+right_rot+down_rot"]',
        '[[0.4, 20], {"d": 0.3, "look_up": 7}, [0.1, 0.2, 3, 4]]',
    )
    assert segments[0].motions == (Motion("w", 0.4), Motion("left_rot", 20.0))
    assert segments[1].motions == (Motion("up_rot", 7.0), Motion("d", 0.3))
    assert (segments[2].forward, segments[2].strafe, segments[2].yaw_degrees, segments[2].pitch_degrees) == (
        0.1,
        0.2,
        -3.0,
        -4.0,
    )
    assert segments[0].describe() == "w 0.4 + left_rot 20°"


def test_single_action_accepts_one_element_list():
    assert parse_actions('["w"]', "[[0.7]]")[0].forward == pytest.approx(0.7)


def test_round_trip_to_canonical_json():
    segments = parse_actions('["forward", "w+look_left", "idle", "d"]', '[0.2, {"w": 1, "left_rot": 30}, 0, 3]')
    actions, speeds = to_json_lists(segments)
    assert json.loads(actions) == ["w", "w+left_rot", "idle", "d"]
    assert parse_actions(actions, speeds) == segments


def test_limits_are_inclusive():
    segments = parse_actions('["w", "left_rot", "w"]', "[3, 90, 0]")
    assert segments[0].forward == 3 and segments[1].yaw_degrees == 90 and segments[2].forward == 0
    assert len(parse_actions(json.dumps(["w"] * 5), json.dumps([0.1] * 5), max_chunks=5)) == 5


MALFORMED = [
    ("not json", "[0.2]", "actions: not valid JSON (Expecting value at line 1 column 1)"),
    ('["w"]', "[0.2,", "action_speeds: not valid JSON (Expecting value at line 1 column 6)"),
    ('{"w": 0.2}', "[0.2]", "actions: expected a JSON list, got object"),
    ('["w"]', '"0.2"', "action_speeds: expected a JSON list, got string"),
    ("[]", "[]", "actions: the list is empty; give at least one action (one per 33-frame chunk)"),
    ('["w", "s"]', "[0.2]", "action_speeds: 1 speed(s) for 2 action(s); give exactly one speed entry per action"),
    (
        '["w", "jump"]',
        "[0.2, 1]",
        "actions[1]: unknown action 'jump'; expected one of w, s, a, d, left_rot, right_rot, up_rot, down_rot, idle "
        "(or an alias such as 'forward', 'look_left')",
    ),
    ('["w", 3]', "[0.2, 1]", 'actions[1]: expected a string such as "w" or "w+left_rot", got number 3'),
    (
        '[""]',
        "[0.2]",
        "actions[0]: empty action; expected one of w, s, a, d, left_rot, right_rot, up_rot, down_rot, idle",
    ),
    (
        '["w+"]',
        "[[0.2, 1]]",
        "actions[0]: unknown action '(empty)'; expected one of w, s, a, d, left_rot, right_rot, up_rot, down_rot, idle "
        "(or an alias such as 'forward', 'look_left')",
    ),
    (
        '["w+s"]',
        "[[0.2, 0.2]]",
        "actions[0]: 's' conflicts with 'w' (same forward axis); combine at most one action per axis",
    ),
    ('["left_rot+look_left"]', "[[1, 1]]", "actions[0]: 'left_rot' appears twice; combine at most one action per axis"),
    ('["idle+w"]', "[0]", "actions[0]: 'idle' cannot be combined with other actions"),
    ('["w"]', '["fast"]', "action_speeds[0]: speed for 'w' must be a number, got string \"fast\""),
    ('["w"]', "[true]", "action_speeds[0]: speed for 'w' must be a number, got boolean true"),
    ('["w"]', "[NaN]", "action_speeds[0]: speed for 'w' must be finite, got nan"),
    ('["d"]', "[Infinity]", "action_speeds[0]: speed for 'd' must be finite, got inf"),
    ('["w"]', "[-0.2]", "action_speeds[0]: speed for 'w' must be >= 0 (use 's' for the other direction), got -0.2"),
    (
        '["left_rot"]',
        "[-5]",
        "action_speeds[0]: speed for 'left_rot' must be >= 0 (use 'right_rot' for the other direction), got -5",
    ),
    ('["w"]', "[3.5]", "action_speeds[0]: speed for 'w' is 3.5; the maximum is 3 per chunk"),
    ('["up_rot"]', "[120]", "action_speeds[0]: speed for 'up_rot' is 120 degrees; the maximum is 90 degrees per chunk"),
    (
        '["w+left_rot"]',
        "[0.5]",
        "action_speeds[0]: 'w+left_rot' combines 2 actions, so its speed must be a list like [0.4, 20] or an object "
        'like {"w": 0.4, "left_rot": 20}; got number 0.5',
    ),
    (
        '["w+left_rot"]',
        "[[0.5]]",
        "action_speeds[0]: 'w+left_rot' has 2 part(s), so its speed list needs 2 value(s) in the same order "
        "(e.g. [0.4, 20]); got 1",
    ),
    (
        '["w+left_rot"]',
        '[{"w": 0.5, "d": 1}]',
        "action_speeds[0]: key 'd' is not a part of 'w+left_rot'; expected keys w, left_rot",
    ),
    ('["w+left_rot"]', '[{"w": 0.5}]', "action_speeds[0]: missing speed for 'left_rot' of 'w+left_rot'"),
    ('["idle"]', "[0.5]", "action_speeds[0]: 'idle' does not move the camera; its speed must be 0, got number 0.5"),
    (
        '["w", "w+right_rot"]',
        '[0.2, [0.2, "x"]]',
        "action_speeds[1]: speed for 'right_rot' must be a number, got string \"x\"",
    ),
    ('["w"]', "[null]", "action_speeds[0]: speed for 'w' must be a number, got null"),
]


@pytest.mark.parametrize("actions,speeds,message", MALFORMED)
def test_malformed_inputs_have_exact_messages(actions, speeds, message):
    with pytest.raises(ActionError) as info:
        parse_actions(actions, speeds)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_chunk_limit_and_input_size():
    with pytest.raises(ActionError, match=r"^actions: 65 actions given; at most 64 chunks per request$"):
        parse_actions(json.dumps(["w"] * 65), json.dumps([0.2] * 65))
    with pytest.raises(ActionError, match=r"^actions: 4 actions given; at most 3 chunks per request$"):
        parse_actions(json.dumps(["w"] * 4), json.dumps([0.2] * 4), max_chunks=3)
    with pytest.raises(ActionError, match=r"^actions: input is 100001 characters; at most 100000 are accepted$"):
        parse_actions(" " * 100_001, "[]")


def test_segment_equality_is_structural():
    assert parse_actions('["w"]', "[0.2]")[0] == Segment((Motion("w", 0.2),))
