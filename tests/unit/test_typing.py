"""mypy over the modules that are type-clean, so a bug like the client's old
``response.expires`` (a method used as the granted lifetime, which killed the
re-registration task) is found before it runs.

Only the modules listed in ``CLEAN`` are checked (the rest of the tree has
findings of its own still); skipped where mypy is not installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SRC = Path(__file__).resolve().parents[2] / "src"
CLEAN = ["imsbox/ue/register.py", "imsbox/rcs", "imsbox/sip/identity.py", "imsbox/serve.py"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(paths: list[str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("MYPYPATH", str(SRC))   # this tree, not an installed imsbox
    out, err, status = mypy_api.run(["--follow-imports=silent", "--cache-dir", str(cache),
                                     "--show-error-codes", *paths])
    return status, out + err


def test_clean_modules_stay_clean(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status, report = mypy([str(SRC / p) for p in CLEAN], cache, monkeypatch)
    assert status == 0, report


def test_a_method_used_as_a_value_is_found(cache: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bug = tmp_path / "granted.py"
    bug.write_text(
        "from imsbox.sip.message import Response\n\n\n"
        "def granted(response: Response, asked: int) -> int:\n"
        "    return response.expires if response.expires is not None else asked\n")
    status, report = mypy([str(bug)], cache, monkeypatch)
    assert status == 1 and "granted.py:5" in report and "return-value" in report, report
