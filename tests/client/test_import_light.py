"""Importing the SDK loads neither torch nor fastapi (nor the server's modules): it stays light."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("torch", "fastapi", "starlette", "pydantic", "app.main", "app.layers", "app.backends")


def test_import_app_client_is_light():
    code = (
        "import sys, app.client\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "client = app.client.Client(base_url='http://127.0.0.1:1')\n"  # constructing one too
        "assert not [m for m in ('torch', 'fastapi') if m in sys.modules]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_app_package_itself_is_light():
    done = subprocess.run([sys.executable, "-c", "import sys, app; assert 'torch' not in sys.modules"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
