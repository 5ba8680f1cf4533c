"""Every "docs/SPEC.md section N" that code and docs cite names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_spec_references_point_into_docs_spec() -> None:
    spec = (REPO / "docs" / "SPEC.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\.", spec, flags=re.M)}
    cited: dict[str, set[int]] = {}
    for path in [*REPO.glob("*/**/*.py"), *REPO.glob("*.md"), *REPO.glob("docs/*.md")]:
        if ".git" in path.parts or "site-packages" in path.parts:
            continue
        text = path.read_text(errors="replace")
        assert not re.search(r"\bspec sections? \d", text), f"{path} cites a spec section outside docs/SPEC.md"
        for match in re.finditer(r"docs/SPEC\.md sections? ([\d ,and]+)", text):
            cited.setdefault(str(path.relative_to(REPO)), set()).update(int(n) for n in re.findall(r"\d+", match[1]))
    assert cited, "no file cites docs/SPEC.md"
    missing = {p: sorted(n - sections) for p, n in cited.items() if n - sections}
    assert not missing, missing
