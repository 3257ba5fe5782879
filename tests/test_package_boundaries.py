"""The packages import one way: the device side never reaches into the desktop side.

``henet_edge.device`` runs on the Pi, where only the ``device`` extra is installed, so it
may import the standard library, its runtime and image libraries and itself (plus the
package root for ``HenetEdgeError`` and the version), never ``henet_keras``, ``convert``,
``calibration``, ``deploy`` or ``cli``. ``deploy/agent.py`` runs under the device's own
``python3`` before any venv exists, so it may import the standard library only.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import henet_edge

PACKAGE = Path(henet_edge.__file__).parent
DESKTOP = ("henet_keras", "convert", "calibration", "deploy", "cli")


def package_of(path: Path) -> str:
    """The dotted package a module's relative imports start from."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1])


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` for every import in ``source``, relative ones
    resolved against ``package`` (``from . import x`` counts as the module ``package.x``)."""
    parts = package.split(".")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(parts[:len(parts) - node.level + 1])
            if node.module:
                found.append((node.lineno, f"{base}.{node.module}"))
            else:
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or ""))
    return found


def imports_of(path: Path) -> list[tuple[int, str]]:
    return imported_modules(path.read_text(), package_of(path))


def test_relative_imports_are_resolved():
    source = "from ..convert import bundle_writer\nfrom . import runtime\nimport os\n"
    assert [n for _, n in imported_modules(source, "henet_edge.device")] == [
        "henet_edge.convert", "henet_edge.device.runtime", "os"]
    assert package_of(PACKAGE / "device" / "bundle.py") == "henet_edge.device"
    assert package_of(PACKAGE / "device" / "__init__.py") == "henet_edge.device"


def test_device_side_never_imports_the_desktop_side():
    offenders = []
    for path in sorted((PACKAGE / "device").rglob("*.py")):
        for line, name in imports_of(path):
            top = name.split(".")
            if top[0] == "henet_edge" and len(top) > 1 and top[1] in DESKTOP:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert offenders == []


def test_device_agent_imports_only_the_standard_library():
    agent = PACKAGE / "deploy" / "agent.py"
    outside = [f"agent.py:{line} imports {name}" for line, name in imports_of(agent)
               if name.split(".")[0] not in sys.stdlib_module_names]
    assert outside == []


# What each package may import from the others (the README's layout section says the
# same in words). Data flows one way: models -> calibration -> conversion -> deployment,
# and everything may use the device side, which uses nothing of theirs.
MAY_IMPORT = {
    "device": set(),
    "henet_keras": {"device"},
    "calibration": {"device", "henet_keras"},
    "convert": {"device", "henet_keras", "calibration"},
    "deploy": {"device", "convert"},
    "cli": {"device", "henet_keras", "calibration", "convert", "deploy"},  # and no one it
}
PACKAGES = set(MAY_IMPORT)


def crossings(package: str) -> list[str]:
    """Every import in ``package`` of another henet_edge package it may not use."""
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, name in imports_of(path):
            parts = name.split(".")
            if parts[0] != "henet_edge" or len(parts) < 2 or parts[1] == package:
                continue
            if parts[1] in PACKAGES and parts[1] not in MAY_IMPORT[package]:
                found.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    return found


def test_every_package_is_in_the_table():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk == set(MAY_IMPORT)


def test_packages_import_only_what_the_layering_allows():
    assert {p: crossings(p) for p in MAY_IMPORT} == {p: [] for p in MAY_IMPORT}


def test_a_crossing_is_found(tmp_path, monkeypatch):
    """The check itself can fail: a device module importing the converter is caught."""
    fake = tmp_path / "henet_edge"
    (fake / "device").mkdir(parents=True)
    (fake / "device" / "__init__.py").write_text("")
    (fake / "device" / "bad.py").write_text("from ..convert import pipeline\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert crossings("device") == ["device/bad.py:1 imports henet_edge.convert"]
