"""Headless Chromium (Debian's `chromium` package) for tests of pages the gateway serves, and reading the DOM back.

`.ci/run` installs the package where apt-get exists; tests that need it skip, saying so, only where it is not
installed. Every run gets a fresh profile and the flags that keep Chromium off the network.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)  # fmt: skip


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Chromium is not installed: `apt-get install -y chromium` (Debian's package; .ci/run installs it).")
    return found


def _run(*arguments: str, cwd: Path | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [chromium(), *_FLAGS, f"--user-data-dir={profile}", *arguments],
            capture_output=True, text=True, timeout=90, cwd=cwd, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise AssertionError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str) -> str:
    """The DOM after Chromium loaded `url`, serialized (what `--dump-dom` prints)."""
    return _run("--dump-dom", url)


def screenshot(url: str, name: str, size: str = "1100,1800") -> Path:
    """A PNG of `url` in tests/artifacts/ (git-ignored), kept for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    _run(f"--screenshot={path}", f"--window-size={size}", url)
    return path


class Elements(HTMLParser):
    """Every start tag's attributes, in document order: enough to read `id`s and `data-*` values back."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def by_id(self, element_id: str) -> dict[str, str]:
        return next(attrs for _, attrs in self.tags if attrs.get("id") == element_id)

    def with_attribute(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.tags if name in attrs]
