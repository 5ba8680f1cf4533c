"""Every command's line: both spellings of each flag, help in one style with examples,
one-line parse errors, and no torch before the flags are parsed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import bench, extract, report, runs, sweep
from jobs.cli import UsageError

REPO = Path(__file__).resolve().parents[2]
PARSERS = {"sweep": sweep.build_parser, "extract": extract.build_parser, "report": report.build_parser,
           "bench": bench.build_parser, "runs": runs.build_parser}


@pytest.mark.parametrize("name", PARSERS)
def test_every_long_flag_takes_both_spellings(name: str) -> None:
    parser = PARSERS[name]()
    parser.format_help()
    for action in parser._actions:
        for flag in [f for f in action.option_strings if f.startswith("--") and re.search(r"[-_]", f[2:])]:
            for twin in (flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")):
                assert parser._option_string_actions.get(twin) is action, (name, flag, twin)


@pytest.mark.parametrize("name", PARSERS)
def test_help_shows_one_style_a_program_name_and_examples(name: str) -> None:
    parser = PARSERS[name]()
    text = parser.format_help()
    assert f"python -m jobs.{name}" in text
    assert "examples:" in text
    listed = text.split("options:", 1)[1].split("examples:", 1)[0]   # the flags and their help
    for part in (parser.format_usage(), listed):
        assert not re.findall(r"--[a-z0-9]+_[a-z0-9_]+", part), re.findall(r"--[a-z0-9]+_[a-z0-9_]+", part)


@pytest.mark.parametrize("name", PARSERS)
def test_parse_errors_are_one_line(name: str) -> None:
    with pytest.raises(UsageError) as err:
        PARSERS[name]().parse_args(["--no-such-flag"])
    assert "\n" not in str(err.value) and f"python -m jobs.{name} --help" in str(err.value)


@pytest.mark.parametrize("name", PARSERS)
def test_help_loads_no_torch(name: str) -> None:
    code = (f"import sys; from jobs import {name} as m; m.build_parser().format_help(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_extract_defaults_match_the_store() -> None:
    from store.artifacts import DEFAULT_CACHE_ROOT, MIN_GRAPH_K

    assert extract.DEFAULT_CACHE_ROOT == str(DEFAULT_CACHE_ROOT) and extract.MIN_GRAPH_K == MIN_GRAPH_K
