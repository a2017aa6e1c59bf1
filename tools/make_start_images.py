"""Render the controller page's example start images (a small deterministic ray caster, numpy only).

    python tools/make_start_images.py                 # writes gamecraft/ui/static/examples/*.png + index.json
    python tools/make_start_images.py --out DIR       # somewhere else (tests compare with the committed files)

Each scene is a camera 1.6 units above a ground plane looking along +z (the start direction of every
GameCraft world), convex objects (boxes, gabled roofs, pyramids for pines) given as planes, a sky with a
sun, a mountain silhouette and distance haze. Rendered at the model's 1216×704; textures come from a
seeded ``numpy.random.Generator`` (PCG64, the same numbers on every machine). No third-party pictures.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "gamecraft" / "ui" / "static" / "examples"
WIDTH, HEIGHT = 1216, 704
FOCAL = 0.62  # focal length in image widths (about 78° across)
EYE = 1.6


@dataclass
class Solid:
    """A convex solid: planes (normal n, offset d) with n·x <= d inside, and an RGB colour in 0..1."""

    planes: list[tuple[tuple[float, float, float], float]]
    color: tuple[float, float, float]
    texture: float = 0.06  # strength of the value noise on its faces
    bounds: tuple[float, float, float, float, float, float] | None = None  # x0, x1, y0, y1, z0, z1 (for speed)


def box(x0, x1, y0, y1, z0, z1, color, texture=0.06) -> Solid:
    return Solid(
        [((1, 0, 0), x1), ((-1, 0, 0), -x0), ((0, 1, 0), y1), ((0, -1, 0), -y0), ((0, 0, 1), z1), ((0, 0, -1), -z0)],
        color,
        texture,
        (x0, x1, y0, y1, z0, z1),
    )


def roof(x0, x1, y0, rise, z0, z1, color) -> Solid:
    """A gabled roof over x0..x1 (ridge along z at the middle, ``rise`` above y0)."""
    half = (x1 - x0) / 2
    slope = math.hypot(rise, half)
    # the two slopes: planes through the eaves (x0, y0) / (x1, y0) and the ridge, inside below them
    left = ((-rise / slope, half / slope, 0.0), (-rise * x0 + half * y0) / slope)
    right = ((rise / slope, half / slope, 0.0), (rise * x1 + half * y0) / slope)
    return Solid(
        [left, right, ((0, -1, 0), -y0), ((0, 0, 1), z1), ((0, 0, -1), -z0)],
        color,
        0.1,
        (x0, x1, y0, y0 + rise, z0, z1),
    )


def pine(x, z, height, radius, color, sides=7) -> list[Solid]:
    """A pine: a trunk and a pyramid of ``sides`` faces."""
    faces = [((0, -1, 0), -0.6)]
    base = 0.6
    for k in range(sides):
        a = 2 * math.pi * (k + 0.5) / sides
        nx, nz, ny = math.cos(a) * height, math.sin(a) * height, radius
        norm = math.sqrt(nx * nx + ny * ny + nz * nz)
        n = (nx / norm, ny / norm, nz / norm)
        # the face passes through the apex (x, base + height, z)
        faces.append((n, n[0] * x + n[1] * (base + height) + n[2] * z))
    trunk = box(x - 0.12, x + 0.12, 0, 0.7, z - 0.12, z + 0.12, (0.33, 0.22, 0.14))
    return [trunk, Solid(faces, color, 0.12, (x - radius, x + radius, base, base + height, z - radius, z + radius))]


@dataclass
class Scene:
    name: str
    title: str
    prompt: str
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    ground: tuple[float, float, float]
    path: tuple[float, float, float] | None
    path_width: float
    mountains: tuple[float, float, float]
    sun: tuple[float, float, float]  # direction (normalised below)
    haze: float
    ground_texture: float = 0.35
    solids: list[Solid] = field(default_factory=list)
    seed: int = 0


def _screen_rect(bounds) -> tuple[int, int, int, int]:
    """The pixel rectangle (row0, row1, col0, col1) that a box of world ``bounds`` can cover."""
    x0, x1, y0, y1, z0, z1 = bounds
    if z0 <= 0.1:
        return 0, HEIGHT, 0, WIDTH
    us, vs = [], []
    for x in (x0, x1):
        for y in (y0, y1):
            for z in (z0, z1):
                us.append(x / z * WIDTH * FOCAL + WIDTH / 2)
                vs.append(-(y - EYE) / z * WIDTH * FOCAL + HEIGHT / 2)
    col0, col1 = max(0, math.floor(min(us)) - 1), min(WIDTH, math.ceil(max(us)) + 1)
    row0, row1 = max(0, math.floor(min(vs)) - 1), min(HEIGHT, math.ceil(max(vs)) + 1)
    return row0, max(row0, row1), col0, max(col0, col1)


def _noise(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A tileable value-noise lattice [size, size] in -1..1."""
    return rng.uniform(-1.0, 1.0, (size, size))


def _sample(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of the tiled lattice at real coordinates."""
    n = lattice.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    i0, j0 = u0.astype(np.int64) % n, v0.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    top = lattice[j0, i0] * (1 - fu) + lattice[j0, i1] * fu
    bottom = lattice[j1, i0] * (1 - fu) + lattice[j1, i1] * fu
    return top * (1 - fv) + bottom * fv


def _fbm(lattice, u, v, octaves=4) -> np.ndarray:
    total, amp = np.zeros_like(u), 0.5
    for k in range(octaves):
        total += amp * _sample(lattice, u * 2**k, v * 2**k)
        amp /= 2
    return total


def render(scene: Scene) -> np.ndarray:
    """[HEIGHT, WIDTH, 3] uint8 RGB."""
    rng = np.random.Generator(np.random.PCG64(scene.seed))
    lattice, clouds = _noise(rng), _noise(rng)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    dx = (xs + 0.5 - WIDTH / 2) / (WIDTH * FOCAL)
    dy = -(ys + 0.5 - HEIGHT / 2) / (WIDTH * FOCAL)
    norm = np.sqrt(dx * dx + dy * dy + 1.0)
    d = np.stack([dx / norm, dy / norm, 1.0 / norm], axis=-1)  # ray directions, +y up
    sun = np.array(scene.sun) / np.linalg.norm(scene.sun)

    # sky: gradient, sun, clouds; mountains in front of it
    elev = np.clip(d[..., 1], -1, 1)
    t = np.clip(elev / 0.6, 0, 1)[..., None] ** 0.7
    color = np.array(scene.sky_horizon) * (1 - t) + np.array(scene.sky_top) * t
    sun_dot = d @ sun
    color += (np.clip((sun_dot - 0.9975) * 400, 0, 1) * 0.6 + np.clip(sun_dot, 0, 1) ** 40 * 0.25)[..., None]
    cloud = np.clip(_fbm(clouds, d[..., 0] / np.maximum(elev, 0.05) * 3, 8 / np.maximum(elev, 0.05)) * 1.6, 0, 1)
    veil = (0.5 * cloud * (elev > 0.02))[..., None]
    color = color * (1 - veil) + veil
    azimuth = np.arctan2(d[..., 0], d[..., 2])
    ridge = (
        0.06
        + 0.035 * np.sin(azimuth * 5 + scene.seed)
        + 0.02 * np.sin(azimuth * 13 + 1.3 * scene.seed)
        + 0.012 * _sample(lattice, azimuth * 40, np.zeros_like(azimuth))
    )
    mountain = (elev < ridge) & (elev > -0.02)
    shade = 0.75 + 0.25 * np.sin(azimuth * 31 + elev * 40)
    mcol = np.array(scene.mountains)[None, None] * shade[..., None]
    mcol = mcol * 0.55 + np.array(scene.sky_horizon) * 0.45  # far away: mostly haze
    color = np.where(mountain[..., None], mcol, color)

    # ground plane y = 0
    depth = np.full((HEIGHT, WIDTH), np.inf)
    down = d[..., 1] < -1e-6
    tg = np.where(down, EYE / np.maximum(-d[..., 1], 1e-6), np.inf)
    far = np.where(down, np.minimum(tg, 400.0), 400.0)  # finite everywhere: textures need real coordinates
    gx, gz = d[..., 0] * far, d[..., 2] * far
    tex = _fbm(lattice, gx * 1.3, gz * 1.3)
    gcol = np.array(scene.ground) * (1 + scene.ground_texture * tex[..., None])
    if scene.path is not None:
        edge = scene.path_width + 0.25 * _sample(lattice, gz * 0.4, np.ones_like(gz))
        on_path = np.abs(gx) < edge
        # cobbles: rows of stones with offset joints, one tone per stone, dark mortar between them
        row = np.floor(gz * 2.2)
        col = np.floor(gx * 2.2 + 0.5 * (row % 2))
        tone = 0.85 + 0.15 * _sample(lattice, col * 7.0 + 0.5, row * 3.0 + 0.5)
        fu, fv = gx * 2.2 + 0.5 * (row % 2) - col, gz * 2.2 - row
        mortar = (np.minimum(fu, 1 - fu) < 0.06) | (np.minimum(fv, 1 - fv) < 0.08)
        stones = np.where(mortar, 0.55, tone)
        pcol = np.array(scene.path) * stones[..., None]
        gcol = np.where(on_path[..., None], pcol, gcol)
    gcol = gcol * (0.65 + 0.35 * max(sun[1], 0.2))
    ground = down & (tg < 400)
    color = np.where(ground[..., None], gcol, color)
    depth = np.where(ground, tg, depth)

    # solids, each on the pixels its bounding box covers
    origin = np.array([0.0, EYE, 0.0])
    for solid in scene.solids:
        r0, r1, c0, c1 = _screen_rect(solid.bounds) if solid.bounds else (0, HEIGHT, 0, WIDTH)
        if r0 >= r1 or c0 >= c1:
            continue
        dd = d[r0:r1, c0:c1]
        shape = dd.shape[:2]
        t_near = np.zeros(shape)
        t_far = np.full(shape, np.inf)
        normal_index = np.zeros(shape, dtype=np.int64)
        normals = np.array([p[0] for p in solid.planes], dtype=np.float64)
        for k, (n, off) in enumerate(solid.planes):
            n = np.asarray(n, dtype=np.float64)
            denom = dd @ n
            dist = off - origin @ n  # >= 0 when the eye is inside this half-space
            with np.errstate(divide="ignore", invalid="ignore"):
                tk = dist / denom
            newer = (denom < 0) & (tk > t_near)
            normal_index = np.where(newer, k, normal_index)
            t_near = np.where(newer, tk, t_near)
            t_far = np.where(denom > 0, np.minimum(t_far, tk), t_far)
            if dist < 0:  # the eye is outside this face: rays parallel to it never enter
                t_far = np.where(denom == 0, -np.inf, t_far)
        sub_depth = depth[r0:r1, c0:c1]
        hit = (t_near < t_far) & (t_near > 0.01) & (t_near < sub_depth)
        if not hit.any():
            continue
        n_hit = normals[normal_index]
        n_hit = n_hit / np.linalg.norm(n_hit, axis=-1, keepdims=True)
        light = 0.45 + 0.55 * np.clip(n_hit @ sun, 0, 1)
        px, py, pz = (origin[i] + dd[..., i] * t_near for i in range(3))
        grain = 1 + solid.texture * _fbm(lattice, px * 2 + pz * 2, py * 4, octaves=2)
        scol = np.array(solid.color) * (light * grain)[..., None]
        color[r0:r1, c0:c1] = np.where(hit[..., None], scol, color[r0:r1, c0:c1])
        depth[r0:r1, c0:c1] = np.where(hit, t_near, sub_depth)

    # haze with distance
    fog = 1 - np.exp(-np.where(np.isfinite(depth), depth, 0) * scene.haze)
    fog = np.where(np.isfinite(depth), fog, 0)[..., None]
    color = color * (1 - fog) + np.array(scene.sky_horizon) * fog
    return (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8)


def _village() -> Scene:
    solids: list[Solid] = []
    walls = [(0.84, 0.72, 0.55), (0.9, 0.85, 0.74), (0.78, 0.62, 0.48)]
    roofs = [(0.62, 0.22, 0.16), (0.45, 0.28, 0.2), (0.55, 0.18, 0.14)]
    for i, z in enumerate(range(7, 80, 9)):
        for side in (-1, 1):
            x0 = 3.2 if side > 0 else -3.2 - 4.2 - 0.4 * (i % 2)
            x1 = x0 + 4.2 + 0.4 * (i % 2)
            h = 2.6 + 0.5 * ((i + (side > 0)) % 3)
            solids.append(box(x0, x1, 0, h, z, z + 6.5, walls[(i + side) % 3]))
            solids.append(roof(x0 - 0.3, x1 + 0.3, h, 1.7, z - 0.3, z + 6.8, roofs[(i - side) % 3]))
            face = x1 if side < 0 else x0  # the wall that faces the street gets a door
            solids.append(box(face - 0.06, face + 0.06, 0, 1.7, z + 2.6, z + 3.7, (0.3, 0.19, 0.12), 0.02))
    return Scene(
        "village.png",
        "Village street",
        "A medieval village street, sunny day, cobblestones, timber houses, game screenshot",
        (0.27, 0.5, 0.86),
        (0.75, 0.85, 0.95),
        (0.32, 0.52, 0.24),
        (0.55, 0.5, 0.44),
        1.6,
        (0.38, 0.45, 0.55),
        (-0.4, 0.7, 0.5),
        0.012,
        0.35,
        solids,
        seed=1,
    )


def _forest() -> Scene:
    solids: list[Solid] = []
    rng = np.random.Generator(np.random.PCG64(7))
    for _ in range(70):
        side = rng.choice([-1, 1])
        x = side * rng.uniform(2.5, 16.0)
        z = rng.uniform(4.0, 70.0)
        h = rng.uniform(4.5, 8.5)
        g = rng.uniform(0.16, 0.26)
        solids += pine(float(x), float(z), float(h), float(h) * 0.28, (0.08, g, 0.1))
    return Scene(
        "forest.png",
        "Forest path",
        "A misty pine forest with a dirt path, morning light, realistic game screenshot",
        (0.45, 0.6, 0.78),
        (0.82, 0.86, 0.84),
        (0.2, 0.34, 0.16),
        (0.45, 0.36, 0.26),
        1.0,
        (0.3, 0.38, 0.4),
        (0.5, 0.45, 0.8),
        0.03,
        0.35,
        solids,
        seed=2,
    )


def _canyon() -> Scene:
    solids: list[Solid] = []
    rng = np.random.Generator(np.random.PCG64(11))
    for z in range(0, 120, 6):
        for side in (-1, 1):
            inner = 5.0 + rng.uniform(0.0, 2.5) + z * 0.04
            h = rng.uniform(6.0, 14.0)
            x0, x1 = (inner, inner + 8) if side > 0 else (-inner - 8, -inner)
            tone = rng.uniform(0.85, 1.1)
            solids.append(box(x0, x1, 0, h, z, z + 6.2, (0.72 * tone, 0.38 * tone, 0.22 * tone), 0.16))
    return Scene(
        "canyon.png",
        "Desert canyon",
        "A red rock desert canyon at golden hour, sand road, adventure game screenshot",
        (0.3, 0.45, 0.75),
        (0.98, 0.78, 0.55),
        (0.85, 0.66, 0.44),
        (0.78, 0.6, 0.42),
        1.3,
        (0.7, 0.45, 0.35),
        (-0.8, 0.35, 0.6),
        0.012,
        0.25,
        solids,
        seed=3,
    )


def _snow() -> Scene:
    solids: list[Solid] = []
    for x, z, w in ((-9.0, 14.0, 5.0), (7.0, 22.0, 4.5), (-6.5, 34.0, 4.0)):
        solids.append(box(x, x + w, 0, 2.6, z, z + 4.5, (0.45, 0.3, 0.2), 0.2))
        solids.append(roof(x - 0.4, x + w + 0.4, 2.6, 1.6, z - 0.4, z + 4.9, (0.93, 0.95, 0.98)))
    rng = np.random.Generator(np.random.PCG64(5))
    for _ in range(30):
        x = float(rng.choice([-1, 1]) * rng.uniform(3.0, 20.0))
        z = float(rng.uniform(8.0, 60.0))
        h = float(rng.uniform(3.5, 7.0))
        solids += pine(x, z, h, h * 0.3, (0.12, 0.24, 0.2))
    return Scene(
        "snow.png",
        "Snowy hamlet",
        "A snowy mountain hamlet with wooden cabins and pine trees, clear winter day, game screenshot",
        (0.38, 0.56, 0.85),
        (0.86, 0.9, 0.96),
        (0.9, 0.92, 0.96),
        (0.75, 0.77, 0.8),
        1.2,
        (0.85, 0.88, 0.94),
        (0.3, 0.55, 0.7),
        0.018,
        0.08,
        solids,
        seed=4,
    )


SCENES = (_village, _forest, _canyon, _snow)


def write_all(out: Path) -> list[dict]:
    """Render every scene into ``out`` (PNG) and write ``out/index.json``; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for make in SCENES:
        scene = make()
        Image.fromarray(render(scene)).save(out / scene.name, optimize=True)
        # "path": where the page's copy lives in the repository (the commands the page shows read it from there)
        index.append(
            {
                "file": scene.name,
                "title": scene.title,
                "prompt": scene.prompt,
                "path": (OUT / scene.name).relative_to(REPO).as_posix(),
            }
        )
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder for the PNGs and index.json (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for entry in write_all(args.out):
        print(f"wrote {args.out / entry['file']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
