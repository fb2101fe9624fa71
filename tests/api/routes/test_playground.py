"""GET /playground and its assets as plain HTTP (the page's behaviour is in tests/browser/test_playground.py)."""

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from app.api.routes.playground import ASSETS

ROOT = Path(__file__).resolve().parents[3]


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", page.text)
    assert sorted(assets) == ["/static/playground/playground.css", "/static/playground/playground.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and response.content, asset
    assert client.get("/static/playground/playground.js").headers["content-type"].startswith(("text/javascript",
                                                                                             "application/javascript"))


def test_the_page_is_served_under_a_strict_content_security_policy(client):
    """No inline script or style, nothing from another origin: the page works under it (the browser
    test fails on any console error, CSP violations included)."""
    policy = client.get("/playground").headers["content-security-policy"]
    directives = dict(item.strip().split(" ", 1) for item in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["default-src"] == "'self'"
    html = client.get("/playground").text
    assert "<script>" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert "http://" not in html and "https://" not in html  # no CDN: everything comes from this server


def test_the_page_is_not_an_api_operation(client):
    assert "/playground" not in client.get("/openapi.json").json()["paths"]


def test_package_data_ships_every_asset():
    """`pip install .` copies only what pyproject's package-data names: every file the page needs is matched."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["app"]
    shipped = [path for path in Path(str(ASSETS)).iterdir() if path.is_file()]
    assert {path.name for path in shipped} >= {"index.html", "playground.css", "playground.js"}
    for path in shipped:
        relative = path.relative_to(ROOT / "app").as_posix()
        assert any(fnmatch(relative, glob) for glob in globs), f"{relative} is not in package-data"
