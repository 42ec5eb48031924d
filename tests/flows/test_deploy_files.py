"""deploy/: the systemd unit, the compose file and their config say what imsbox does.

The unit is checked by ``systemd-analyze verify`` (Debian's systemd package),
its ExecStart and the compose services' commands against the ``--role``
choices of ``imsbox serve``, and the two configs load. Running them is
tests/flows/test_shared_backends.py's deploy layout test, which starts every
role with the unit's own ExecStart line; no Docker daemon is needed here.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from imsbox.config import load_config
from imsbox.serve import default_registry

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "imsbox@.service"
CONFIG_IN_IMAGE = "/etc/imsbox/imsbox.toml"


def unit_exec_start(role: str, config: str | None = None) -> list[str]:
    """The unit's ExecStart for instance ``role`` (``%i``), as an argv; with
    ``config`` the config path it names is replaced."""
    line = next(line for line in UNIT.read_text().splitlines()
                if line.startswith("ExecStart="))
    argv = [arg.replace("%i", role) for arg in shlex.split(line.removeprefix("ExecStart="))]
    return [config if arg == CONFIG_IN_IMAGE and config else arg for arg in argv]


def unit_roles() -> set[str]:
    """The roles the unit's header says it runs (``# Roles: ...``)."""
    line = next(line for line in UNIT.read_text().splitlines() if line.startswith("# Roles:"))
    return set(line.removeprefix("# Roles:").split("(")[0].split())


def node_roles() -> set[str]:
    return set(default_registry().roles)


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def imsbox_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("image") == "imsbox:local"}


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: install the Debian package systemd"
    binary = Path(sys.executable).with_name("imsbox")
    assert binary.exists(), binary
    text = UNIT.read_text().replace("/usr/local/bin/imsbox", str(binary))
    unit = tmp_path / "imsbox@scscf.service"  # verify wants an instance name
    unit.write_text(text)
    run = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    findings = [line for line in (run.stdout + run.stderr).splitlines() if unit.name in line]
    assert run.returncode == 0 and not findings, run.stdout + run.stderr


def test_unit_runs_serve_for_every_role() -> None:
    assert unit_roles() == node_roles()
    argv = unit_exec_start("scscf")
    assert argv == ["/usr/local/bin/imsbox", "serve", "--role", "scscf",
                    "--config", CONFIG_IN_IMAGE]


def test_compose_runs_every_role_as_the_unit_does() -> None:
    services = imsbox_services()
    roles = {svc["command"][2] for svc in services.values()}
    assert roles == node_roles()
    for name, svc in services.items():
        assert svc["command"] == unit_exec_start(svc["command"][2])[1:], name
        assert f"./compose.toml:{CONFIG_IN_IMAGE}:ro" in svc["volumes"], name
        assert set(svc["depends_on"]) == {"postgres", "redis"}, name
        assert svc["network_mode"] == "host", name


def test_compose_config_names_the_compose_back_ends() -> None:
    config = load_config(DEPLOY / "compose.toml")
    postgres = compose()["services"]["postgres"]["environment"]
    user, password, db = (postgres[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD",
                                                "POSTGRES_DB"))
    assert config.store_url == f"postgresql://{user}:{password}@127.0.0.1:5432/{db}"
    assert config.cache_url == "redis://127.0.0.1:6379/0"
    assert str(config.data_dir) == "/var/lib/imsbox"


@pytest.mark.parametrize("name", ["imsbox.toml", "compose.toml"])
def test_deploy_configs_load(name: str) -> None:
    config = load_config(DEPLOY / name)
    assert config.store_url.startswith("postgresql://") and config.cache_url
