"""Generate docs/api.md, the API reference, from the docstrings of everything in ``pvae.__all__``.

    .venv/bin/python docs/build_api.py           # write docs/api.md
    .venv/bin/python docs/build_api.py --check   # fail if docs/api.md is out of date (CI does this)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import pvae

API = Path(__file__).with_name("api.md")


def _entry(name: str) -> str:
    obj = getattr(pvae, name)
    module = getattr(obj, "__module__", "pvae")
    doc = inspect.getdoc(obj) or "(no docstring)"
    if inspect.isclass(obj) or inspect.isfunction(obj):
        try:
            sig = str(inspect.signature(obj))
        except (TypeError, ValueError):
            sig = "(...)"
        kind = "class" if inspect.isclass(obj) else "def"
        path = module.replace(".", "/") + ".py"
        head = f"### `{name}`\n\n`{kind} {module}.{name}{sig}` — [source](../{path})"
    elif isinstance(obj, dict):
        rows = [f"- `{key}`" + (f" — `{v.usage}`: {v.summary}" if hasattr(v, "usage") else "") for key, v in obj.items()]
        return f"### `{name}`\n\nA registry (`dict`) with the names:\n\n" + "\n".join(rows) + "\n"
    else:
        head = f"### `{name}`\n\n`{module}.{name} = {obj!r}`"
    return f"{head}\n\n```text\n{doc}\n```\n"


def render() -> str:
    """The text of docs/api.md."""
    names = [n for n in pvae.__all__ if not n.startswith("_")]
    parts = ["# API reference\n", "Generated from the docstrings by `docs/build_api.py`; do not edit by hand.\n"]
    parts += [_entry(n) for n in names]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md differs from the docstrings")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not API.exists() or API.read_text() != text:
            print("docs/api.md is out of date: run .venv/bin/python docs/build_api.py", file=sys.stderr)
            return 1
        return 0
    API.write_text(text)
    print(f"wrote {API}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
