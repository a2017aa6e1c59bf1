"""Every number of seconds or per cent a user reads in README.md or in the API's input descriptions is a
measured one: it is listed in BENCHMARKS.md's "Figures quoted in README.md and the API" table with the card
and the date, and the BENCHMARKS section that table names contains the figure (rounded as quoted; within
5 % where the quote says "≈"), that card and that date. A figure that is not a measurement (a platform
limit, arithmetic, an estimate) stands in ``NOT_MEASURED`` below with the reason.

So a README edit that quotes a new number fails here until its measurement is in BENCHMARKS.md, and a
figure whose benchmark section is rewritten to other numbers fails until the README follows.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import pytest
from conftest import REPO_ROOT

# Figures that are not measurements, with the reason. Keys: the figure as check_figures() writes it.
NOT_MEASURED = {
    "1.32 s": "one chunk's length: 33 frames at 25 fps (arithmetic)",
    "60 s": "Replicate holds a synchronous request for 60 s (the platform's limit, not ours)",
    "142 s": "L40S later chunk: an estimate from the H200's measured components (docs/hardware.md), labelled so",
    "120 s": "the bound on joining a chunk thread after a stop (JOIN_TIMEOUT_S in serving/chunks_ahead.py): a chosen "
    "limit, several times the longest step or decode compile measured, not a measurement",
    "165 s": "A100 later chunk: an estimate from the H200's measured components (docs/hardware.md), labelled so",
}

INDEX_HEADING = "Figures quoted in README.md and the API"
CARDS = ("H100", "H200", "A100", "L40S")
# a number of seconds or per cent, or several joined by "/" or a range dash: "46.5 s", "≈ 391 / 194 / 103 s",
# "14–18 s", "19–23 %" (not "1216", "$0.001525/s", "8 MiB")
FIGURE = re.compile(r"(?<![\w.$/])(\d+(?:\.\d+)?(?:\s*(?:[–/]|-(?=\d))\s*\d+(?:\.\d+)?)*)\s?(s\b|%)")
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Figure:
    value: str  # as written: "46.5"
    unit: str  # "s" or "%"
    approximate: bool  # written "≈ …" or "~…"
    where: str  # "README.md:79"

    @property
    def key(self) -> str:
        return f"{self.value} {self.unit}"


def figures_in(text: str, source: str) -> list[Figure]:
    """Every seconds/per-cent figure of ``text`` (each member of a list or range on its own)."""
    found = []
    for match in FIGURE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[max(0, match.start() - 3) : match.start()]
        approximate = "≈" in before or "~" in before
        for value in NUMBER.findall(match.group(1)):
            found.append(Figure(value, match.group(2), approximate, f"{source}:{line}"))
    return found


def input_descriptions(source: str) -> str:
    """The ``description=`` texts of every ``Input(...)`` in a predictor's source, one per line."""
    texts = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Input":
            for keyword in node.keywords:
                if keyword.arg == "description":
                    texts.append(ast.literal_eval(keyword.value))
    return "\n".join(texts)


def sections(markdown: str) -> list[tuple[int, str, str]]:
    """``(level, heading, text)`` per heading; the text runs to the next heading of the same or a higher
    level (so a ``##`` section's text includes its ``###`` ones)."""
    heads = [(m.start(), len(m.group(1)), m.group(2).strip()) for m in re.finditer(r"(?m)^(#+) (.+)$", markdown)]
    out = []
    for i, (start, level, title) in enumerate(heads):
        end = next((s for s, lv, _ in heads[i + 1 :] if lv <= level), len(markdown))
        out.append((level, title, markdown[start:end]))
    return out


@dataclass(frozen=True)
class IndexRow:
    figure: str
    quoted_as: str
    card: str
    date: str
    section: str


def index_rows(benchmarks: str) -> list[IndexRow]:
    """The rows of BENCHMARKS.md's index of quoted figures (a five-column table)."""
    matches = [text for _, title, text in sections(benchmarks) if title == INDEX_HEADING]
    assert matches, f"BENCHMARKS.md has no '## {INDEX_HEADING}' section"
    rows = []
    for line in matches[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 5 and not set(cells[0]) <= set("-") and cells[0] != "figure":
            rows.append(IndexRow(*(c.strip("`") for c in cells)))
    return rows


def _matches(figure: Figure, text: str) -> bool:
    """Whether ``text`` holds ``figure``'s number: rounded to the quote's decimals, or within 5 % for ≈; a
    per-cent figure as a per-cent figure (seconds stand bare in BENCHMARKS' tables, under a seconds header)."""
    decimals = len(figure.value.partition(".")[2])
    want = float(figure.value)
    pattern = NUMBER if figure.unit == "s" else re.compile(NUMBER.pattern + r"(?=\s?%)")
    for token in pattern.findall(text):
        got = float(token)
        if round(got, decimals) == want or (figure.approximate and abs(got - want) <= 0.05 * want):
            return True
    return False


def check_figures(figures: list[Figure], benchmarks: str, not_measured: dict[str, str]) -> list[str]:
    """One line per figure without a measurement behind it (empty: every figure is backed)."""
    rows = {row.figure: row for row in index_rows(benchmarks)}
    all_sections = sections(benchmarks)
    problems = []
    for figure in figures:
        if figure.key in not_measured:
            continue
        row = rows.get(figure.key)
        if row is None:
            problems.append(f"{figure.where}: {figure.key} has no row in BENCHMARKS.md's '{INDEX_HEADING}'")
            continue
        found = [(level, text) for level, title, text in all_sections if row.section in title]
        if len(found) != 1:
            problems.append(f"{figure.key}: {len(found)} BENCHMARKS.md headings contain {row.section!r} (want 1)")
            continue
        level, text = found[0]
        # the card and date stand in the section or in the top-level section around it
        start = benchmarks.index(text)
        outer = next(
            (t for lv, _, t in all_sections if lv == 2 and benchmarks.index(t) <= start < benchmarks.index(t) + len(t)),
            text,
        )
        card = next((c for c in CARDS if c in row.card), None)
        if card is None or card not in outer:
            problems.append(f"{figure.key}: card {row.card!r} is not one of {CARDS} named in {row.section!r}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", row.date) or row.date not in outer:
            problems.append(f"{figure.key}: date {row.date!r} is not the date of {row.section!r}")
        if not _matches(figure, text):
            problems.append(f"{figure.where}: {figure.key} does not appear in BENCHMARKS.md's {row.section!r}")
    return problems


def test_every_readme_figure_is_measured():
    readme = (REPO_ROOT / "README.md").read_text()
    benchmarks = (REPO_ROOT / "BENCHMARKS.md").read_text()
    figures = figures_in(readme, "README.md")
    assert len(figures) > 30  # the extraction finds the README's tables
    problems = check_figures(figures, benchmarks, NOT_MEASURED)
    assert not problems, "\n".join(problems)


def test_every_figure_in_the_api_descriptions_is_measured():
    text = input_descriptions((REPO_ROOT / "predict.py").read_text())
    figures = figures_in(text, "predict.py Input descriptions")
    assert {f.key for f in figures} >= {"5 %", "17 %"}  # go_fast: with this image on an H100, with SageAttention2
    problems = check_figures(figures, (REPO_ROOT / "BENCHMARKS.md").read_text(), NOT_MEASURED)
    assert not problems, "\n".join(problems)


def test_go_fast_quotes_the_h100_as_shipped():
    """The go_fast input's 5 % is the H100 measurement of 2026-12-07 (this image: no SageAttention)."""
    rows = {row.figure: row for row in index_rows((REPO_ROOT / "BENCHMARKS.md").read_text())}
    assert "H100" in rows["5 %"].card and rows["5 %"].date == "2026-12-07"


def test_every_allowed_figure_is_still_quoted():
    """An allow-list entry nothing quotes any more is removed (the list stays short and true)."""
    quoted = {f.key for f in figures_in((REPO_ROOT / "README.md").read_text(), "README.md")}
    quoted |= {f.key for f in figures_in(input_descriptions((REPO_ROOT / "predict.py").read_text()), "predict.py")}
    assert set(NOT_MEASURED) <= quoted, set(NOT_MEASURED) - quoted


BENCH = f"""# Benchmarks

## One H100, 2026-12-07: a prediction

* **Card:** NVIDIA H100 80GB HBM3. **Date:** 2026-12-07.

### Later chunk

| chunk | exact | go_fast |
|---|---|---|
| later | 45.4 s | 43.3 s (−5 %) |

## {INDEX_HEADING}

| figure | quoted as | card | date | measured in |
|---|---|---|---|---|
| 45.4 s | later chunk | NVIDIA H100 80GB HBM3 | 2026-12-07 | Later chunk |
| 5 % | go_fast gain | NVIDIA H100 80GB HBM3 | 2026-12-07 | Later chunk |
| 43 s | go_fast | NVIDIA H200 | 2026-12-07 | Later chunk |
| 46 s | exact | NVIDIA H100 80GB HBM3 | 2026-12-04 | Later chunk |
"""


@pytest.mark.parametrize(
    ("readme", "problem"),
    [
        ("a later chunk takes 45.4 s", None),
        ("a later chunk takes 45 s", "45 s has no row"),  # another rounding is another figure
        ("go_fast is 5 % faster", None),
        ("go_fast is 6 % faster", "6 % has no row"),
        ("go_fast takes 43 s", "card 'NVIDIA H200' is not one of"),
        ("exact takes ≈ 46 s", "date '2026-12-04' is not the date"),
        ("a chunk is 1.32 s long", None),  # allowed, with its reason
        ("limits: 8 MiB, 1216 px, $0.001525/s", None),  # not seconds or per cent
    ],
)
def test_the_check_finds_unmeasured_figures(readme, problem):
    problems = check_figures(figures_in(readme, "R"), BENCH, {"1.32 s": "arithmetic"})
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_a_figure_missing_from_its_section_is_found():
    """The index names a section; the figure must stand in it (not just anywhere in BENCHMARKS.md)."""
    bench = BENCH.replace("| later | 45.4 s |", "| later | 45.9 s |") + "\n45.4 s elsewhere\n"
    problems = check_figures(figures_in("takes 45.4 s", "R"), bench, {})
    assert problems == ["R:1: 45.4 s does not appear in BENCHMARKS.md's 'Later chunk'"]


def test_lists_and_ranges_are_read_figure_by_figure():
    figures = figures_in("full: ≈ 391 / 194 / 103 s; import 14–18 s; 19–23 % faster", "R")
    assert [(f.key, f.approximate) for f in figures] == [
        ("391 s", True),
        ("194 s", True),
        ("103 s", True),
        ("14 s", False),
        ("18 s", False),
        ("19 %", False),
        ("23 %", False),
    ]
