"""Bad set-up is one line naming what is wrong and a non-zero exit, never a traceback:
the probe's cases (a non-UTF-8 config, an unknown revision, an unreachable database, an
output path that is a directory, a misspelled variable), run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _vpp(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    clean.update({"VPP_DATABASE__URL": f"sqlite:///{tmp_path}/vpp.db", **env})
    return subprocess.run(
        [sys.executable, "-m", "vpp", *args],
        capture_output=True,
        text=True,
        env=clean,
        cwd=tmp_path,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("case", "args", "env", "says"),
    [
        ("non-utf8 config", ["--config", "bad.yaml", "config", "show"], {}, "not UTF-8 text"),
        ("unknown revision", ["db", "upgrade", "zzzz"], {}, "Can't locate revision"),
        (
            "unreachable database",
            ["db", "current"],
            {"VPP_DATABASE__URL": "postgresql+psycopg://nobody@127.0.0.1:1/x"},
            "the database is not reachable",
        ),
        (
            "misspelled variable",
            ["config", "show"],
            {"VPP_DATABSE__URL": "sqlite:///typo.db"},
            "did you mean VPP_DATABASE__URL",
        ),
        (
            "output is a directory",
            ["optimize", str(ROOT / "scenarios" / "de-2019-arbitrage.yaml"), "--json", "."],
            {},
            "is a directory (give a file name)",
        ),
    ],
)
def test_bad_setup_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, case: str, args: list[str], env: dict[str, str], says: str
) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"api:\n  port: 8\xff\n")
    r = _vpp(args, tmp_path, **env)
    assert r.returncode != 0, case
    assert "Traceback" not in r.stderr, r.stderr
    assert says in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
