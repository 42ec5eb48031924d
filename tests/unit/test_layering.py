"""The import rules of the package, read from the source with ``ast``.

Every module under src/imsbox belongs to a layer (its first package below
imsbox, or its own name at the top); a layer may import only the layers
``ALLOWED`` lists for it:

    cli                                 the command line
    serve                               composition root: builds the nodes
    testing                             the loopback test kit (config + a simple UE)
    ue        apps        ims           client · application servers · IMS core
    config                              imsbox.toml
    ifc                                 the iFC model (TS 29.228), read by config, run by ims
    rcs                                 CPM/RCS vocabulary (ue and apps share it)
    sip  sdp  msrp  content             protocol layers
    errors                              the error roots they share
    store     runtime                   state · process settings
    trace                               the trace feed and its views (above the protocols)
    console                             the web console (store + trace feed), under serve

The client never imports apps or ims, apps never ims, ims never apps; the
protocol layers and rcs import no node, no client and no store. Imports
inside functions and under ``TYPE_CHECKING`` count like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "imsbox"

# "errors" holds the roots the layers' error trees share (imsbox/errors.py).
PROTOCOL = frozenset({"sip", "sdp", "msrp", "content", "errors"})
ALLOWED: dict[str, frozenset[str]] = {
    "runtime": frozenset(),
    "store": frozenset({"content", "errors"}),   # RFC 4575 endpoint states in its models
    **{layer: PROTOCOL for layer in PROTOCOL},
    "rcs": PROTOCOL,
    "ifc": PROTOCOL,                  # the iFC model of TS 29.228: config reads it, ims runs it
    "config": PROTOCOL | {"store", "ifc"},   # value types such as transport Limits
    "ims": PROTOCOL | {"store", "config", "ifc"},
    "apps": PROTOCOL | {"rcs", "store", "config", "media"},
    "media": frozenset({"sdp", "errors"}),   # RTP audio; ue and apps build on it
    "ue": PROTOCOL | {"rcs", "runtime", "media"},
    # the trace feed and its views: they parse SIP/MSRP, never reach into a node
    "trace": PROTOCOL | {"config", "runtime"},
    # the web console: the store and the trace feed, read-only
    "console": PROTOCOL | {"store", "trace"},
    "serve": PROTOCOL | {"rcs", "store", "config", "runtime", "ims", "apps", "ifc", "trace",
                         "console"},
    # the loopback test kit: a network's config and a simple UE, for tests and scripts
    "testing": PROTOCOL | {"config", "ue"},
    "testing_backends": frozenset(),   # throw-away PostgreSQL/Redis servers: stdlib only
    # the fork supervisor of ``imsbox sip-proxy --workers``: sockets, then processes
    "workers": PROTOCOL,
    "cli": PROTOCOL | {"rcs", "store", "config", "runtime", "ims", "apps", "ue", "serve", "ifc",
                       "trace", "workers"},
}


@dataclass(frozen=True, slots=True)
class Breach:
    module: str
    imported: str
    line: int

    def __str__(self) -> str:
        return (f"{self.module} (line {self.line}) imports {self.imported}: layer "
                f"{layer_of(self.module)} may not import layer {layer_of(self.imported)}")


def layer_of(module: str) -> str:
    """``imsbox.sip.ua.dialog`` -> ``sip``; ``imsbox.cli`` -> ``cli``; ``imsbox`` itself
    (the version) belongs to no layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)



def _parse(source: str) -> ast.Module:
    """ast.parse; once more on CPython 3.11's spurious "AST constructor recursion
    depth mismatch" SystemError (python/cpython#106905, seen after hypothesis
    changed the recursion limit in the same worker process)."""
    try:
        return ast.parse(source)
    except SystemError:
        return ast.parse(source)

def imports_of(module: str, source: str, is_package: bool = False,
               submodule: Callable[[str], bool] = lambda name: False) -> list[tuple[str, int]]:
    """The imsbox modules ``source`` (the text of ``module``) imports, with line numbers.

    Relative imports resolve against the module's package; ``from PKG import NAME``
    names the module PKG.NAME when ``submodule(PKG.NAME)`` says it is one.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(_parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            names = [f"{target}.{a.name}" for a in node.names if submodule(f"{target}.{a.name}")]
            found += [(name, node.lineno) for name in names] or [(target, node.lineno)]
    return [(name, line) for name, line in found
            if name == PACKAGE or name.startswith(PACKAGE + ".")]


def breaches(module: str, imported: list[tuple[str, int]]) -> list[Breach]:
    """The imports of ``module`` that its layer may not make."""
    layer = layer_of(module)
    allowed = ALLOWED.get(layer)
    out = []
    for name, line in imported:
        target = layer_of(name)
        if target in ("", layer):
            continue
        if allowed is None or target not in allowed:
            out.append(Breach(module, name, line))
    return out


def _is_module(root: Path) -> Callable[[str], bool]:
    def check(name: str) -> bool:
        path = root.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
    return check


def all_breaches(root: Path = SRC) -> list[Breach]:
    out: list[Breach] = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        module = module_name(path, root)
        found = imports_of(module, path.read_text(encoding="utf-8"),
                           path.name == "__init__.py", _is_module(root))
        out += breaches(module, found)
    return out


# -- the rules hold --------------------------------------------------------------------

def test_every_module_has_a_layer() -> None:
    layers = {layer_of(module_name(p, SRC)) for p in (SRC / PACKAGE).rglob("*.py")}
    assert layers - {""} <= ALLOWED.keys(), f"modules outside every layer: {layers - ALLOWED.keys()}"


def test_no_module_imports_a_layer_it_may_not() -> None:
    found = all_breaches()
    assert not found, "layer breaches:\n" + "\n".join(map(str, found))


# -- the checker can fail --------------------------------------------------------------

@pytest.mark.parametrize(("module", "source", "culprit"), [
    ("imsbox.ue.client", "from ..apps.anchor import Anchor\n", "imsbox.apps.anchor"),
    ("imsbox.ue.client", "from ..ims import hss\n", "imsbox.ims.hss"),
    ("imsbox.apps.messaging", "def late():\n    from ..ims.hss import Hss\n", "imsbox.ims.hss"),
    ("imsbox.ims.serve", "import imsbox.apps.messaging\n", "imsbox.apps.messaging"),
    ("imsbox.sip.proxy", ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from imsbox.store import Store\n"), "imsbox.store"),
    ("imsbox.rcs.cpm", "from ..ue import client\n", "imsbox.ue.client"),
    ("imsbox.store.sqlite", "from ..sip.uri import parse_uri\n", "imsbox.sip.uri"),
    ("imsbox.sdp.model", "from .. import ims\n", "imsbox.ims"),
])
def test_checker_reports_a_synthetic_breach(module: str, source: str, culprit: str,
                                            tmp_path: Path) -> None:
    root = tmp_path / "src"
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    for package in [root.joinpath(*module.split(".")[:i]) for i in range(1, 3)]:
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
    for sub in ("ue/client", "ims/hss", "ims/__init__", "apps/anchor", "apps/messaging"):
        (root / PACKAGE / f"{sub}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / PACKAGE / f"{sub}.py").touch()
    path.write_text(source)
    found = [b for b in all_breaches(root) if b.module == module]
    assert [b.imported for b in found] == [culprit]
    assert module in str(found[0]) and culprit in str(found[0])


def test_checker_passes_allowed_imports() -> None:
    ok = "from ..rcs import cpm\nfrom ..sip.message import Request\nfrom . import register\n"
    assert breaches("imsbox.ue.client", imports_of("imsbox.ue.client", ok)) == []
    assert imports_of("imsbox.apps.anchor", "from .. import sdp\n",
                      submodule=lambda name: name == "imsbox.sdp") == [("imsbox.sdp", 1)]
