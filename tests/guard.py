"""Registry guards: a script run in a fresh interpreter, so an entry it registers first reaches every import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_guard(script: str, tmp_path: Path, *args: object) -> str:
    """Run ``script`` (Python source) from the repository root with ``args``; its stdout.

    The interpreter sees only this checkout (``PYTHONPATH``), a bare ``PATH`` and
    ``tmp_path`` as ``HOME``. Fails the test with the end of its stderr unless it exits 0.
    """
    path = tmp_path / "guard.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path), *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
