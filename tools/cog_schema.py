"""Generate the Cog OpenAPI schema (``.cog/openapi_schema.json``) without Docker.

coglet, Cog's HTTP server, validates inputs only against ``.cog/openapi_schema.json`` in its
working directory, a file normally written by the Go ``cog build`` (a static tree-sitter
parser). Without it every input is accepted unchecked. This tool writes the same document
from the Python SDK's own inspector (``cog._inspector``, private, so cog is pinned), following
the Go generator (``pkg/schema/openapi_spec.go``, cog 0.23):

* inputs in signature order with ``x-order``; ``choices`` become an enum component named
  after the input and referenced through ``allOf``;
* a default of None makes an input optional only on ``Optional[T]`` / ``T | None`` (and on a
  ``Secret`` whose ``default=None`` is written out); ``seed: int = Input(default=None)`` stays
  required, as in Go;
* ``@cog.streaming`` on run()/predict() (found in the source, since the decorator leaves no
  trace at runtime) sets ``x-cog-streaming`` on ``POST /predictions``: coglet reads SSE
  support from this flag;
* floats with integral values are written as integers (``5`` not ``5.0``), as Go does.

Output: sorted keys, 2-space indent, UTF-8, trailing newline, so the file is deterministic.

Usage (from the repository root)::

    python tools/cog_schema.py            # write .cog/openapi_schema.json for cog.yaml's predictor
    python tools/cog_schema.py --check    # exit 1 with a diff if the file is stale
    python tools/cog_schema.py --root DIR --ref predict.py:Predictor --out PATH
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import inspect
import json
import math
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(".cog") / "openapi_schema.json"


def predictor_ref_from_cog_yaml(root: Path) -> str:
    """The ``run:`` (or deprecated ``predict:``) pointer of ``root/cog.yaml``."""
    import yaml

    config = yaml.safe_load((root / "cog.yaml").read_text()) or {}
    ref = config.get("run") or config.get("predict")
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"{root / 'cog.yaml'} has no 'run: file.py:Class' entry")
    return ref


def _title_case(name: str) -> str:
    # Go's TitleCase: capitalise the first letter of each "_"-separated part, keep the rest.
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_"))


# ----------------------------------------------------------------------------- source facts


def _cog_name(node: ast.expr, cog_modules: set[str], cog_names: dict[str, str]) -> str:
    """``cog.x`` / ``x`` / ``x(...)`` -> ``x`` if it names something from cog, else ""."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id in cog_modules else ""
    if isinstance(node, ast.Name):
        return cog_names.get(node.id, "")
    return ""


def _target_function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """``run``/``predict`` of class ``name``, or the top-level function ``name``."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions) and node.name == name:
            return node
        if isinstance(node, ast.ClassDef) and node.name == name:
            methods = [f for f in node.body if isinstance(f, functions)]
            return next((f for f in methods if f.name in ("run", "predict")), None)
    return None


def source_facts(source: str, target: str) -> tuple[bool, set[str] | None]:
    """(run()/predict() has ``@cog.streaming``, names of inputs with an explicit default).

    The explicit-default set is None when the method is not in the class body (inherited);
    callers then read a None default as "no default given".
    """
    tree = ast.parse(source)
    cog_modules, cog_names = set(), {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            cog_modules |= {a.asname or a.name for a in node.names if a.name == "cog"}
        elif isinstance(node, ast.ImportFrom) and node.module == "cog":
            cog_names |= {a.asname or a.name: a.name for a in node.names}
    fn = _target_function(tree, target)
    if fn is None:
        return False, None
    streaming = any(_cog_name(d, cog_modules, cog_names) == "streaming" for d in fn.decorator_list)
    args, defaults = fn.args.posonlyargs + fn.args.args, fn.args.defaults
    explicit = set()
    for arg, default in zip(args[len(args) - len(defaults) :], defaults, strict=False):
        # Input(...) without a default (positional or keyword) gives none; any other
        # expression (Input(default=...), a bare literal) does.
        if not (
            isinstance(default, ast.Call)
            and _cog_name(default, cog_modules, cog_names) == "Input"
            and not default.args
            and all(k.arg != "default" for k in default.keywords)
        ):
            explicit.add(arg.arg)
    return streaming, explicit


# ----------------------------------------------------------------------------- inspection


def inspect_predictor(root: Path, ref: str) -> tuple[Any, Any, str]:
    """Import ``root/<file>`` in isolation and inspect ``<Class>``.

    Returns (cog PredictorInfo, the run/predict function, the file's source). The module is
    loaded under a unique name and removed again, so a test process can inspect several
    ``predict.py`` files; ``root`` is on ``sys.path`` meanwhile for the module's own imports.
    """
    from cog import _inspector
    from cog.predictor import _user_method_owner

    file_name, _, class_name = ref.partition(":")
    path = (root / file_name).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"predictor file not found: {path}")
    module_name = f"_cog_schema_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and get_type_hints look modules up here
    root_dir = str(root.resolve())
    sys.path.insert(0, root_dir)
    try:
        spec.loader.exec_module(module)
        with warnings.catch_warnings():
            # BasePredictor/predict() still work in 0.23; the lead chose them deliberately.
            warnings.filterwarnings("ignore", r".*(BasePredictor|predict\(\)) is deprecated")
            info = _inspector.create_predictor(module_name, class_name)
        target = getattr(module, class_name)
        if inspect.isclass(target):
            method = "run" if _user_method_owner(target, "run") else "predict"
            target = getattr(target, method)
        return info, _inspector._unwrap(target), path.read_text()
    finally:
        sys.modules.pop(module_name, None)
        if root_dir in sys.path:
            sys.path.remove(root_dir)


def _json_value(value: Any) -> Any:
    """A default or choice as JSON (Secret -> its value, Path -> str, Enum -> value)."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _go_numbers(node: Any) -> Any:
    # Go's encoding/json writes float64(5) as 5; match it so numbers read as in Go's output.
    if isinstance(node, float) and math.isfinite(node) and node.is_integer() and abs(node) < 1e21:
        return int(node)
    if isinstance(node, dict):
        return {k: _go_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_go_numbers(v) for v in node]
    return node


def _input_schemas(info: Any, fn: Any, explicit: set[str] | None) -> tuple[dict, dict]:
    """(Input component, enum components) following Go's buildInputSchema."""
    from cog import _adt
    from cog.input import FieldInfo

    params = inspect.signature(fn).parameters
    optional = (_adt.Repetition.OPTIONAL, _adt.Repetition.OPTIONAL_REPEATED)
    properties, required, enums = {}, [], {}
    for name, field in sorted(info.inputs.items(), key=lambda kv: kv[1].order):
        ft = field.type
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": [_json_value(c) for c in field.choices],
                "type": ft.primitive.json_type().get("type", "string"),
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title_case(name)
            prop.update(ft.json_type())

        given = field.default is not None or (explicit is not None and name in explicit)
        nullable = ft.repetition in optional or (
            ft.primitive is _adt.PrimitiveType.SECRET
            and ft.repetition is _adt.Repetition.REQUIRED
            and given
            and field.default is None
        )
        has_default = given and (field.default is not None or nullable)
        if not has_default and (
            ft.union_variants is not None or ft.repetition in (_adt.Repetition.REQUIRED, _adt.Repetition.REPEATED)
        ):
            required.append(name)
        if has_default:
            prop["default"] = _json_value(field.default)
        if nullable:
            prop["nullable"] = True
        for attr, key in (
            ("description", "description"),
            ("ge", "minimum"),
            ("le", "maximum"),
            ("min_length", "minLength"),
            ("max_length", "maxLength"),
            ("regex", "pattern"),
        ):
            if getattr(field, attr) is not None:
                prop[key] = getattr(field, attr)
        if field.deprecated:
            prop["deprecated"] = True
        raw = params[name].default if name in params else None
        if isinstance(raw, FieldInfo) and raw.accept is not None:
            prop["x-cog-accept"] = raw.accept
        properties[name] = prop

    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def _output_schema(info: Any) -> dict:
    schema = info.output.json_type()
    for name, prop in schema.get("properties", {}).items():  # BaseModel outputs
        prop["title"] = _title_case(name)
    return schema


# ----------------------------------------------------------------------------- document

# The parts of the document that do not depend on the predictor (request/response envelopes, validation
# errors, the root, health-check and cancel routes), as the Go generator of cog 0.23 writes them.
FIXED_PARTS = Path(__file__).with_name("cog_openapi_fixed.json")


def build_schema(root: Path, ref: str) -> dict:
    """The OpenAPI 3.0.2 document for predictor ``ref`` (``file.py:Class``) under ``root``."""
    import cog

    info, fn, source = inspect_predictor(root, ref)
    streaming, explicit = source_facts(source, ref.partition(":")[2])
    if streaming and info.output.kind.name not in ("ITERATOR", "CONCAT_ITERATOR"):
        raise ValueError("@streaming requires an Iterator[...] or ConcatenateIterator[...] output")
    input_schema, enums = _input_schemas(info, fn, explicit)
    document = json.loads(FIXED_PARTS.read_text(encoding="utf-8"))
    document["info"]["version"] = cog.__version__
    document["components"]["schemas"].update({"Input": input_schema, "Output": _output_schema(info), **enums})
    if streaming:
        document["paths"]["/predictions"]["post"]["x-cog-streaming"] = True
    return _go_numbers(document)


def render(schema: dict) -> str:
    """Deterministic text: sorted keys, 2-space indent, UTF-8 kept readable, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="folder with cog.yaml")
    parser.add_argument("--ref", help="predictor, e.g. predict.py:Predictor (default: cog.yaml)")
    parser.add_argument("--out", type=Path, help=f"schema file (default: ROOT/{DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    out = args.out or args.root / DEFAULT_OUT
    try:
        ref = args.ref or predictor_ref_from_cog_yaml(args.root)
        text = render(build_schema(args.root, ref))
    except Exception as err:  # a CLI: one readable line instead of a traceback
        print(f"cog_schema: cannot generate the schema: {type(err).__name__}: {err}", file=sys.stderr)
        return 2

    if not args.check:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out} ({ref})")
        return 0
    if not out.is_file():
        print(f"{out} is missing; run: python tools/cog_schema.py", file=sys.stderr)
        return 1
    current = out.read_text(encoding="utf-8")
    if current == text:
        print(f"{out} is up to date ({ref})")
        return 0
    diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), str(out), "generated", lineterm="", n=1))
    changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    print(f"{out} is stale: {changed} lines differ from a fresh generation.", file=sys.stderr)
    print("\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else ""), file=sys.stderr)
    print("run: python tools/cog_schema.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
