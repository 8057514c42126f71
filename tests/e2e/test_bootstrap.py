"""scripts/bootstrap refuses Python versions the pinned packages cannot install on, before it touches anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_python(tmp_path: Path, version: tuple[int, int, int]) -> Path:
    """An interpreter that reports `version` (the real one runs the code, with `sys.version_info` replaced)."""
    script = tmp_path / "python"
    text = ".".join(map(str, version))
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "Python {text}"; exit 0; fi\n'
        f'if [ "$1" = "-c" ]; then exec {sys.executable} -c "import sys; sys.version_info = {version!r}; $2"; fi\n'
        "exit 2\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("version", [(3, 13, 0), (3, 14, 1), (3, 10, 13)])
def test_unsupported_pythons_are_refused_with_the_reason(tmp_path: Path, version: tuple[int, int, int]) -> None:
    python = fake_python(tmp_path, version)
    result = subprocess.run(
        [str(ROOT / "scripts" / "bootstrap")], env={**os.environ, "PYTHON": str(python)}, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"found: Python {'.'.join(map(str, version))}" in result.stderr
    assert "3.11 or 3.12 is needed" in result.stderr and "azure-functions 1.26.0 installs on 3.10-3.12 only" in result.stderr


@pytest.mark.parametrize("version", [(3, 11, 7), (3, 12, 1)])
def test_supported_pythons_pass_the_check(tmp_path: Path, version: tuple[int, int, int]) -> None:
    python = fake_python(tmp_path, version)
    code = "import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))"
    check = (ROOT / "scripts" / "bootstrap").read_text()
    assert code in check  # the same test the script runs, on the same fake interpreter
    assert subprocess.run([str(python), "-c", code]).returncode == 0
