"""``python -m gamecraft.parity``: output format, exit codes, and that it catches a wrong tensor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO_ROOT
from safetensors.torch import load_file, save_file


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "gamecraft.parity", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_actions_section_passes_and_prints_one_line_per_tensor(golden_dir):
    proc = _run(golden_dir, "actions")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("actions ")]
    expected = len(json.loads((golden_dir / "actions.json").read_text())["tensors"]) + 1
    assert len(lines) == expected
    assert all(line.endswith(" ok") and "max_abs_err=" in line for line in lines)
    assert proc.stdout.splitlines()[-1] == f"{expected} passed, 0 failed"


def test_a_perturbed_golden_fails(golden_dir, tmp_path):
    for name in ("actions.json", "actions.safetensors"):
        shutil.copy(golden_dir / name, tmp_path / name)
    tensors = load_file(str(tmp_path / "actions.safetensors"))
    key = next(k for k in tensors if k.startswith("plucker_8x14/"))
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0, 0, 0] += 1e-3
    save_file(tensors, str(tmp_path / "actions.safetensors"))
    proc = _run(tmp_path, "actions")
    assert proc.returncode == 1
    failing = [line for line in proc.stdout.splitlines() if line.endswith("FAIL")]
    assert len(failing) == 1 and key in failing[0]


def test_unknown_section_is_a_usage_error(golden_dir):
    proc = _run(golden_dir, "bogus")
    assert proc.returncode == 2
    assert "unknown parity section 'bogus'" in proc.stderr
