"""The benchmark modules import one another one way only: each may use ``jobs.bench_data``, none imports back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

LEAVES = ["jobs.bench_sweep", "jobs.bench_methods", "jobs.bench_engine", "jobs.bench_million", "jobs.bench_data"]


@pytest.mark.parametrize("module", LEAVES)
def test_a_bench_helper_does_not_import_the_bench_entry_point(module: str) -> None:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jobs.bench'))))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout))
    assert loaded <= {module, "jobs.bench_data"}, f"{module} imported {sorted(loaded - {module, 'jobs.bench_data'})}"

