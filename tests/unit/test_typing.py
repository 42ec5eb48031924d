"""mypy with the project's configuration ([tool.mypy] in pyproject.toml).

.ci/run checks the package with ``mypy src`` before pytest; this test does the
same for a plain ``pytest`` run, and checks that the configuration is strict
enough to find a bug like the client's old ``response.expires`` (a method used
as the granted lifetime, which killed the re-registration task).
Skipped where mypy is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mypy import api as mypy_api  # a pinned test dependency: never skipped

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "pyproject.toml"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(paths: list[str], cache: Path) -> tuple[int, str]:
    out, err, status = mypy_api.run(["--config-file", str(CONFIG), "--cache-dir", str(cache),
                                     *paths])
    return status, out + err


def test_the_package_has_no_findings(cache: Path) -> None:
    status, report = mypy([str(ROOT / "src")], cache)
    assert status == 0, report


def test_a_method_used_as_a_value_is_found(cache: Path, tmp_path: Path) -> None:
    bug = tmp_path / "granted.py"
    bug.write_text(
        "from imsbox.sip.message import Response\n\n\n"
        "def granted(response: Response, asked: int) -> int:\n"
        "    return response.expires if response.expires is not None else asked\n")
    status, report = mypy([str(bug)], cache)
    assert status == 1 and "granted.py:5" in report and "return-value" in report, report
