"""Parse the user's action list and speed list into typed per-chunk segments.

One segment = one 33-frame chunk of video. The two user inputs are JSON lists of equal length::

    actions       = ["w", "left_rot", "w+left_rot", "idle"]
    action_speeds = [0.4,  20,         [0.4, 20],    0]

Vocabulary (official names first, readable aliases accepted, case-insensitive):

=========  ==========================================  =====================  ==================
official   aliases                                     motion                 speed unit
=========  ==========================================  =====================  ==================
w          forward, move_forward                       move forward (+z)      translation units
s          backward, back, move_backward               move backward (−z)     translation units
a          left, strafe_left, move_left                move left (−x)         translation units
d          right, strafe_right, move_right             move right (+x)        translation units
left_rot   look_left, turn_left, yaw_left              turn the view left     degrees per chunk
right_rot  look_right, turn_right, yaw_right           turn the view right    degrees per chunk
up_rot     look_up, pitch_up, tilt_up                  tilt the view up       degrees per chunk
down_rot   look_down, pitch_down, tilt_down            tilt the view down     degrees per chunk
idle       stay, still, none, noop                     camera stays put       speed must be 0
=========  ==========================================  =====================  ==================

Combined actions join parts with ``+`` (``"w+left_rot"``, ``"d+up_rot"``, ``"w+d+left_rot"``): at most
one part per axis (forward/backward, strafe, yaw, pitch), no opposites (``"w+s"``). Their speed is a
list with one value per part, in the order the parts are written (``[0.4, 20]`` = translation 0.4,
20°), or an object keyed by part name (``{"w": 0.4, "left_rot": 20}``).

Units: translation speeds are the reference's units (distance covered over the chunk; the reference
accepts 0–3, the official examples use 0.2). Rotation speeds are **degrees per chunk** — the value goes
through ``np.radians`` in the reference, so its default 0.2 turns only 0.2°; 5–45° per chunk gives a
visible turn. The reference reaches only 32/33 of the value within the chunk (its last pose row is
unused); we keep that for parity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gamecraft.specs.errors import RequestError
from gamecraft.specs.geometry import FPS, FRAMES_PER_CHUNK

MAX_CHUNKS = 64
MAX_TRANSLATION = 3.0
MAX_ROTATION_DEGREES = 90.0
# What gives a visible, model-friendly motion (the README's advice); the parser accepts the full range above.
SENSIBLE_TRANSLATION = (0.2, 1.0)
SENSIBLE_ROTATION_DEGREES = (5.0, 45.0)
MAX_INPUT_CHARS = 100_000

# canonical key -> (axis, sign). Axes: "forward" (+z), "strafe" (+x), "yaw" (+ = left), "pitch" (+ = up).
ACTIONS: dict[str, tuple[str, int]] = {
    "w": ("forward", +1),
    "s": ("forward", -1),
    "a": ("strafe", -1),
    "d": ("strafe", +1),
    "left_rot": ("yaw", +1),
    "right_rot": ("yaw", -1),
    "up_rot": ("pitch", +1),
    "down_rot": ("pitch", -1),
}
IDLE = "idle"
DESCRIPTIONS: dict[str, str] = {
    "w": "move forward",
    "s": "move backward",
    "a": "strafe left",
    "d": "strafe right",
    "left_rot": "turn the view left",
    "right_rot": "turn the view right",
    "up_rot": "tilt the view up",
    "down_rot": "tilt the view down",
    IDLE: "the camera stays put",
}
TRANSLATION_AXES = ("forward", "strafe")
ROTATION_AXES = ("yaw", "pitch")

ALIASES: dict[str, str] = {
    "forward": "w",
    "move_forward": "w",
    "backward": "s",
    "back": "s",
    "move_backward": "s",
    "left": "a",
    "strafe_left": "a",
    "move_left": "a",
    "right": "d",
    "strafe_right": "d",
    "move_right": "d",
    "look_left": "left_rot",
    "turn_left": "left_rot",
    "yaw_left": "left_rot",
    "look_right": "right_rot",
    "turn_right": "right_rot",
    "yaw_right": "right_rot",
    "look_up": "up_rot",
    "pitch_up": "up_rot",
    "tilt_up": "up_rot",
    "look_down": "down_rot",
    "pitch_down": "down_rot",
    "tilt_down": "down_rot",
    "stay": IDLE,
    "still": IDLE,
    "none": IDLE,
    "noop": IDLE,
}


class ActionError(RequestError):
    """A malformed action or speed list; the message names the index and the problem."""


@dataclass(frozen=True)
class Motion:
    """One part of a segment: a canonical action key and its speed (translation units or degrees)."""

    key: str
    speed: float

    @property
    def axis(self) -> str:
        return ACTIONS[self.key][0]

    @property
    def is_rotation(self) -> bool:
        return self.axis in ROTATION_AXES

    @property
    def signed(self) -> float:
        """Speed with the axis sign: forward/strafe in translation units, yaw/pitch in degrees."""
        return ACTIONS[self.key][1] * self.speed


@dataclass(frozen=True)
class Segment:
    """The camera motion of one 33-frame chunk. ``motions`` is empty for ``idle``."""

    motions: tuple[Motion, ...]

    @property
    def label(self) -> str:
        """Canonical action string, e.g. ``"w+left_rot"`` or ``"idle"``."""
        return "+".join(m.key for m in self.motions) or IDLE

    def amount(self, axis: str) -> float:
        """Signed motion along ``axis`` over the whole chunk (0 when the axis is not used)."""
        return sum(m.signed for m in self.motions if m.axis == axis)

    @property
    def forward(self) -> float:
        return self.amount("forward")

    @property
    def strafe(self) -> float:
        return self.amount("strafe")

    @property
    def yaw_degrees(self) -> float:
        return self.amount("yaw")

    @property
    def pitch_degrees(self) -> float:
        return self.amount("pitch")

    def describe(self) -> str:
        """Human text, e.g. ``"w 0.4 + left_rot 20°"``."""
        if not self.motions:
            return IDLE
        return " + ".join(f"{m.key} {m.speed:g}{'°' if m.is_rotation else ''}" for m in self.motions)


def single(key: str, speed: float) -> Segment:
    """A one-part segment (``key`` canonical or alias). No range checks: library/test helper."""
    canonical = ALIASES.get(key, key)
    return Segment(()) if canonical == IDLE else Segment((Motion(canonical, float(speed)),))


def _decode(value: Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > MAX_INPUT_CHARS:
        raise ActionError(f"{field}: input is {len(value)} characters; at most {MAX_INPUT_CHARS} are accepted")
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ActionError(f"{field}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _describe(value: Any) -> str:
    """``number 3``, ``string "x"``, ``null`` … (JSON shown, cut at 40 characters)."""
    if value is None:
        return "null"
    text = json.dumps(value)
    return f"{_type_name(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _parse_action(raw: Any, index: int) -> tuple[str, ...]:
    """Canonical keys of one action entry (empty tuple for idle)."""
    where = f"actions[{index}]"
    if not isinstance(raw, str):
        raise ActionError(f'{where}: expected a string such as "w" or "w+left_rot", got {_describe(raw)}')
    text = raw.strip().lower()
    if not text:
        raise ActionError(f"{where}: empty action; expected one of {', '.join(tuple(ACTIONS) + (IDLE,))}")
    keys: list[str] = []
    for part in text.split("+"):
        name = part.strip()
        key = ALIASES.get(name, name)
        if key not in ACTIONS and key != IDLE:
            shown = name if name else "(empty)"
            raise ActionError(
                f"{where}: unknown action '{shown}'; expected one of "
                f"{', '.join(tuple(ACTIONS) + (IDLE,))} (or an alias such as 'forward', 'look_left')"
            )
        keys.append(key)
    if IDLE in keys:
        if len(keys) > 1:
            raise ActionError(f"{where}: 'idle' cannot be combined with other actions")
        return ()
    seen: dict[str, str] = {}
    for key in keys:
        axis = ACTIONS[key][0]
        if axis in seen:
            other = seen[axis]
            problem = "appears twice" if other == key else f"conflicts with '{other}' (same {axis} axis)"
            raise ActionError(f"{where}: '{key}' {problem}; combine at most one action per axis")
        seen[axis] = key
    return tuple(keys)


def _check_speed(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActionError(f"{where}: speed for '{key}' must be a number, got {_describe(value)}")
    speed = float(value)
    if not math.isfinite(speed):
        raise ActionError(f"{where}: speed for '{key}' must be finite, got {value}")
    axis, _ = ACTIONS[key]
    if speed < 0:
        opposite = next(k for k, (a, s) in ACTIONS.items() if a == axis and k != key)
        raise ActionError(
            f"{where}: speed for '{key}' must be >= 0 (use '{opposite}' for the other direction), got {value:g}"
        )
    limit, unit = (MAX_ROTATION_DEGREES, " degrees") if axis in ROTATION_AXES else (MAX_TRANSLATION, "")
    if speed > limit:
        raise ActionError(f"{where}: speed for '{key}' is {value:g}{unit}; the maximum is {limit:g}{unit} per chunk")
    return speed


def _parse_speed(raw: Any, keys: tuple[str, ...], action: str, index: int) -> tuple[Motion, ...]:
    where = f"action_speeds[{index}]"
    if not keys:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != 0:
            raise ActionError(f"{where}: 'idle' does not move the camera; its speed must be 0, got {_describe(raw)}")
        return ()
    if len(keys) == 1 and not isinstance(raw, (list, dict)):
        return (Motion(keys[0], _check_speed(raw, keys[0], where)),)
    example_list = "[" + ", ".join("0.4" if ACTIONS[k][0] in TRANSLATION_AXES else "20" for k in keys) + "]"
    example_obj = "{" + ", ".join(f'"{k}": {"0.4" if ACTIONS[k][0] in TRANSLATION_AXES else "20"}' for k in keys) + "}"
    if isinstance(raw, list):
        if len(raw) != len(keys):
            raise ActionError(
                f"{where}: '{action}' has {len(keys)} part(s), so its speed list needs {len(keys)} "
                f"value(s) in the same order (e.g. {example_list}); got {len(raw)}"
            )
        return tuple(Motion(k, _check_speed(v, k, where)) for k, v in zip(keys, raw, strict=False))
    if isinstance(raw, dict):
        by_key: dict[str, Any] = {}
        for name, value in raw.items():
            key = ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
            if key not in keys:
                raise ActionError(f"{where}: key '{name}' is not a part of '{action}'; expected keys {', '.join(keys)}")
            if key in by_key:
                raise ActionError(f"{where}: '{key}' is given twice")
            by_key[key] = value
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise ActionError(f"{where}: missing speed for {', '.join(repr(k) for k in missing)} of '{action}'")
        return tuple(Motion(k, _check_speed(by_key[k], k, where)) for k in keys)
    raise ActionError(
        f"{where}: '{action}' combines {len(keys)} actions, so its speed must be a list like "
        f"{example_list} or an object like {example_obj}; got {_describe(raw)}"
    )


def parse_actions(
    actions: str | Sequence[Any], speeds: str | Sequence[Any], max_chunks: int = MAX_CHUNKS
) -> list[Segment]:
    """Parse the ``actions`` and ``action_speeds`` inputs (JSON strings or decoded lists).

    Returns one :class:`Segment` per chunk. Raises :class:`ActionError` (a ``ValueError``) whose
    message names the offending index, e.g. ``"actions[3]: unknown action 'jump'; expected one of …"``.
    """
    action_list = _decode(actions, "actions")
    speed_list = _decode(speeds, "action_speeds")
    for field, value in (("actions", action_list), ("action_speeds", speed_list)):
        if not isinstance(value, list):
            raise ActionError(f"{field}: expected a JSON list, got {_type_name(value)}")
    if not action_list:
        raise ActionError("actions: the list is empty; give at least one action (one per 33-frame chunk)")
    if len(action_list) > max_chunks:
        raise ActionError(f"actions: {len(action_list)} actions given; at most {max_chunks} chunks per request")
    if len(speed_list) != len(action_list):
        raise ActionError(
            f"action_speeds: {len(speed_list)} speed(s) for {len(action_list)} action(s); "
            "give exactly one speed entry per action"
        )
    segments = []
    for index, (raw_action, raw_speed) in enumerate(zip(action_list, speed_list, strict=False)):
        keys = _parse_action(raw_action, index)
        segments.append(Segment(_parse_speed(raw_speed, keys, "+".join(keys) or IDLE, index)))
    return segments


def action_table() -> dict[str, Any]:
    """The vocabulary as JSON-able data, built from the parser's own tables (the controller page's source).

    ``actions``: one entry per official name (``idle`` last) with ``aliases``, ``axis`` (forward, strafe,
    yaw, pitch; None for idle), ``sign`` (+1/-1 along the axis), ``kind`` (move, look, idle), ``unit``,
    ``range`` (what the parser accepts) and ``sensible`` (what gives a visible motion), ``description``.
    ``chunk``: frames per chunk, the model's fps and the seconds of video per chunk.
    """
    limits = {
        "move": (MAX_TRANSLATION, SENSIBLE_TRANSLATION, "translation units"),
        "look": (MAX_ROTATION_DEGREES, SENSIBLE_ROTATION_DEGREES, "degrees"),
    }
    entries = []
    for name, (axis, sign) in ACTIONS.items():
        kind = "look" if axis in ROTATION_AXES else "move"
        limit, sensible, unit = limits[kind]
        entries.append(
            {
                "name": name,
                "aliases": sorted(a for a, k in ALIASES.items() if k == name),
                "axis": axis,
                "sign": sign,
                "kind": kind,
                "unit": unit,
                "range": [0.0, limit],
                "sensible": list(sensible),
                "description": DESCRIPTIONS[name],
            }
        )
    entries.append(
        {
            "name": IDLE,
            "aliases": sorted(a for a, k in ALIASES.items() if k == IDLE),
            "axis": None,
            "sign": 0,
            "kind": "idle",
            "unit": None,
            "range": [0.0, 0.0],
            "sensible": [0.0, 0.0],
            "description": DESCRIPTIONS[IDLE],
        }
    )
    return {
        "actions": entries,
        "axes": list(TRANSLATION_AXES + ROTATION_AXES),
        "separator": "+",
        "max_chunks": MAX_CHUNKS,
        "max_input_chars": MAX_INPUT_CHARS,
        "chunk": {"frames": FRAMES_PER_CHUNK, "fps": FPS, "seconds": FRAMES_PER_CHUNK / FPS},
    }
