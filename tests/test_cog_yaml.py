"""cog.yaml is valid for Cog (its own JSON schema, copied to ../shared/cog) and points at real files."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from conftest import REPO_ROOT, shared_path

CONFIG_SCHEMA = shared_path() / "cog" / "config_schema_v1.0.json"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO_ROOT / "cog.yaml").read_text())


def test_cog_yaml_matches_cogs_config_schema(config: dict) -> None:
    if not CONFIG_SCHEMA.is_file():
        pytest.fail(f"Cog's config schema not found at {CONFIG_SCHEMA} (set GAMECRAFT_SHARED)")
    schema = json.loads(CONFIG_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(config)]
    assert not errors, "cog.yaml does not match Cog's schema:\n" + "\n".join(errors)


def test_build_targets_a_gpu_with_python_312(config: dict) -> None:
    build = config["build"]
    assert build["gpu"] is True
    # YAML would read an unquoted 3.12 as a float (and 3.10 as 3.1): require the string.
    assert build["python_version"] == "3.12"


def test_python_requirements_file_exists(config: dict) -> None:
    requirements = config["build"]["python_requirements"]
    assert (REPO_ROOT / requirements).is_file(), f"python_requirements: {requirements} is missing"
    assert "python_packages" not in config["build"]  # deprecated and exclusive with the above


def test_predictor_pointer_names_an_existing_file(config: dict) -> None:
    keys = [key for key in ("run", "predict") if key in config]
    assert len(keys) == 1, f"cog.yaml needs exactly one of run:/predict:, found {keys}"
    file_name, sep, class_name = config[keys[0]].partition(":")
    assert sep and class_name.isidentifier(), f"{keys[0]}: expected 'file.py:Class'"
    assert (REPO_ROOT / file_name).is_file(), f"{keys[0]}: {file_name} does not exist"


def test_readmes_managed_weights_example_matches_cogs_schema(config: dict) -> None:
    """README's mapping of the prepared directory onto Cog's experimental ``weights:`` stanza is valid
    cog.yaml (added to the real one only here; the repository does not use the stanza)."""
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```yaml\n")[1:]]
    example = next(b for b in blocks if b.startswith("# cog.yaml, experimental managed weights"))
    weights = yaml.safe_load(example)["weights"]
    assert "weights" not in config
    schema = json.loads(CONFIG_SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors({**config, "weights": weights})]
    assert not errors, errors
    bad = {**config, "weights": [{**weights[0], "mount": "/src/weights"}]}  # the schema does check entries
    assert list(jsonschema.Draft7Validator(schema).iter_errors(bad))
