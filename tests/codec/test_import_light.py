"""The codec is pure conversions: importing any of its modules loads neither torch nor a web framework."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import app.codec

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "fastapi", "starlette", "app.backends", "app.api", "app.main")


def test_codec_modules_import_neither_torch_nor_fastapi():
    modules = ["app.codec", *(f"app.codec.{m.name}" for m in pkgutil.iter_modules(app.codec.__path__))]
    assert "app.codec.tensors" in modules and "app.codec.msgpack" in modules
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{modules} loaded {done.stdout.strip()}"
