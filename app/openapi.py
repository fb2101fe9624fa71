"""The OpenAPI artefact: `python -m app.openapi` writes openapi/openapi.json from the app;
`python -m app.openapi --check` exits 1 when the committed file differs (tests/test_openapi.py too)."""

import json
import sys
from pathlib import Path
from typing import Any

COMMAND = "python -m app.openapi"
PATH = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def document() -> dict[str, Any]:
    from app.config import Settings
    from app.main import create_app

    return create_app(Settings()).openapi()


def render(schema: dict[str, Any] | None = None) -> str:
    """Stable text: FastAPI's order, two-space indent, UTF-8, a final newline."""
    return json.dumps(schema if schema is not None else document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PATH.exists() or PATH.read_text(encoding="utf-8") != text:
            print(
                f"{PATH.relative_to(Path.cwd()) if PATH.is_relative_to(Path.cwd()) else PATH} is out of date; "
                f"regenerate it with `{COMMAND}`",
                file=sys.stderr,
            )
            return 1
        return 0
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
