"""The repository's docs stand alone: nothing links outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A Markdown link target, or a path in backticks, that starts with ../
LINK = re.compile(r"\]\(([^)\s]+)\)|`(\.\./[^`\s]+)`")
# Places only the developers' workplace has.
OUTSIDE = re.compile(r"(?<![\w.])(?:\.\./shared|/work/shared|/work/\.library)\b")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    out = []
    for name in listed:
        path = ROOT / name
        if path.suffix in {".md", ".py", ".toml", ".txt", ".cfg", ".sh"} or name == ".ci/run":
            out.append(path)
    return out


def outside_links(path: Path, text: str) -> list[str]:
    """Links in ``text`` (of file ``path``) that leave the repository."""
    found = [m.group(0) for m in OUTSIDE.finditer(text)]
    for match in LINK.finditer(text):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        resolved = (path.parent / target).resolve()
        if not resolved.is_relative_to(ROOT):
            found.append(target)
    return found


def test_checker_sees_a_link_outside() -> None:
    doc = ROOT / "docs" / "x.md"
    assert "../../shared/PRODUCT.md" in outside_links(
        doc, "see [the contract](../../shared/PRODUCT.md)")
    assert outside_links(doc, "see `../shared/PRODUCT.md`") != []
    assert outside_links(doc, "see [ims](ims-core.md) and [rfc](https://www.rfc-editor.org)") == []


def test_no_file_links_outside_the_repository() -> None:
    files = tracked_text_files()
    assert any(p.name == "README.md" for p in files)
    breaches = {}
    for path in files:
        if path == Path(__file__).resolve():
            continue  # its own patterns name the places it looks for
        links = outside_links(path, path.read_text(encoding="utf-8", errors="replace"))
        if links:
            breaches[str(path.relative_to(ROOT))] = links
    assert breaches == {}
