"""The hashed lock files in locks/ agree with the pins they are compiled from (`scripts/lock` rewrites them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "locks"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """`name -> version` of every `name==version` line of a requirements file, following `-r` includes."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            found.update(pins(path.parent / line.split(maxsplit=1)[1]))
        elif match := _PIN.match(line):
            found[canonical(match.group(1))] = match.group(2)
    return found


@pytest.mark.parametrize(
    ("source", "lock"),
    [
        ("requirements.txt", "requirements.txt"),
        ("requirements-dev.txt", "requirements-dev.txt"),
        ("locks/bootstrap.in", "bootstrap.txt"),
        ("locks/lock-tool.in", "lock-tool.txt"),
    ],
)
def test_every_pin_is_locked_at_its_version(source: str, lock: str) -> None:
    wanted, locked = pins(ROOT / source), pins(LOCKS / lock)
    assert wanted, source
    stale = {name: (version, locked.get(name)) for name, version in wanted.items() if locked.get(name) != version}
    assert not stale, f"locks/{lock} is out of date with {source} (pinned, locked): {stale}; run scripts/lock"


@pytest.mark.parametrize("lock", sorted(p.name for p in LOCKS.glob("*.txt")))
def test_every_locked_package_carries_hashes(lock: str) -> None:
    entries = re.split(r"\n(?=[A-Za-z])", (LOCKS / lock).read_text().split("\n", 2)[2])
    for entry in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]
    assert "://" not in (LOCKS / lock).read_text()  # no index or mirror URL: the default index's files


def test_runtime_lock_is_a_subset_of_the_dev_lock() -> None:
    runtime, dev = pins(LOCKS / "requirements.txt"), pins(LOCKS / "requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
