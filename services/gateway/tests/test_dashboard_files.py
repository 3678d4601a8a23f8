"""The dashboard's files as served (no broker: the app is built, not started): ``/`` and
``/dashboard/*`` answer with the dashboard's Content-Security-Policy, every module an ES module
imports exists, and nothing inline needs a CSP exception."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from wa_gateway.dashboard import STATIC_DIR
from wa_gateway.main import build_app
from wa_gateway.settings import GatewaySettings

IMPORT = re.compile(r"""(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]""")


def _client(**overrides: object) -> TestClient:
    # Not entered as a context manager: the lifespan (broker connection) does not run.
    return TestClient(build_app(GatewaySettings(profile="embedded", **overrides)))  # type: ignore[arg-type]


def test_index_and_assets_are_served_with_the_dashboard_policy() -> None:
    client = _client()
    index = client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert index.headers["cache-control"] == "no-cache"
    script = client.get("/dashboard/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/dashboard/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/dashboard/no-such-file.js").status_code == 404
    # The API keeps its own, stricter policy.
    assert client.get("/api/instances").headers["content-security-policy"].startswith("default-src 'none'")


def test_config_tells_the_page_whether_the_simulator_routes_exist() -> None:
    assert _client(simulator_routes=True).get("/dashboard/config.json").json()["simulator"] is True
    body = _client(simulator_routes=False).get("/dashboard/config.json").json()
    assert body["simulator"] is False and set(body) == {"simulator", "version"}


def test_the_dashboard_can_be_turned_off() -> None:
    client = _client(dashboard=False)
    assert client.get("/").status_code == 404
    assert client.get("/dashboard/app.js").status_code == 404


def test_every_imported_module_exists() -> None:
    modules = sorted(STATIC_DIR.rglob("*.js"))
    assert len(modules) > 10
    for module in modules:
        for match in IMPORT.finditer(module.read_text()):
            target = match.group(1) or match.group(2)
            assert target.startswith("."), f"{module.name}: bare or absolute import {target!r}"
            resolved = (module.parent / target).resolve()
            assert resolved.is_file(), f"{module.relative_to(STATIC_DIR)} imports missing {target}"


def test_no_inline_script_or_style_needs_a_csp_exception() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html and " style=" not in html and "onclick=" not in html.lower()
    for module in STATIC_DIR.rglob("*.js"):
        text = module.read_text()
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML", text), module.name
        assert "localStorage." not in text, f"{module.name}: tokens belong in sessionStorage or memory"
        assert "eval(" not in text and "new Function(" not in text, module.name


def test_static_dir_is_inside_the_package() -> None:
    # Shipped in the wheel (hatchling packages everything under wa_gateway/).
    assert Path(STATIC_DIR).is_relative_to(Path(__file__).resolve().parents[1] / "wa_gateway")
