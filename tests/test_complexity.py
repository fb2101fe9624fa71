"""No function in app/ is more complex than radon's grade C (cyclomatic complexity <= 20)."""

from pathlib import Path

from radon.complexity import cc_rank, cc_visit

APP = Path(__file__).resolve().parent.parent / "app"


def test_no_function_above_grade_c():
    too_complex = [f"{path.relative_to(APP.parent)}:{block.lineno} {block.name} ({block.complexity})"
                   for path in sorted(APP.rglob("*.py"))
                   for block in cc_visit(path.read_text())
                   if cc_rank(block.complexity) not in "ABC"]
    assert not too_complex, too_complex
