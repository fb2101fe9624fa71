"""The reference backend is the formulas in NumPy: importing it must not load torch."""

import pkgutil
import subprocess
import sys

import app.backends.reference as reference


def test_reference_backend_does_not_import_torch():
    modules = [f"app.backends.reference.{m.name}" for m in pkgutil.iter_modules(reference.__path__)]
    modules += ["app.backends.reference_backend", "app.backends.base", "app.backends.registry", "app.layers.base"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"torch was imported by one of {modules}"


def test_every_kind_has_a_reference_forward():
    from app.backends.reference_backend import FORWARD
    from app.layers.registry import LAYERS

    assert set(FORWARD) == set(LAYERS)
