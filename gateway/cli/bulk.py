"""`subscriptions create-bulk FILE`: many subscriptions from a CSV or JSON file, for onboarding many teams at once.

CSV: a header row with `name` and optionally `scope` and `id`. JSON: a list of objects with the same keys.
Every row is checked before anything is created (errors name the line or item), so a typo never leaves half
a file applied. Creation then runs a few at a time; a row that fails (say, an id that exists) does not stop
the others, and the keys of every created subscription are printed, since they cannot be shown again.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.stores.subscriptions import SubscriptionRepository, validate_scope

_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEYS = frozenset({"name", "scope", "id"})
CONCURRENCY = 8


@dataclass(frozen=True)
class BulkRow:
    #: "line 3" (CSV) or "item 2" (JSON), for messages.
    where: str
    name: str
    scope: str
    id: str | None


@dataclass(frozen=True)
class Created:
    row: BulkRow
    view: dict[str, str]


@dataclass(frozen=True)
class Failed:
    row: BulkRow
    reason: str


def parse(text: str, filename: str, products: Mapping[str, tuple[str, ...]], apis: tuple[str, ...]) -> list[BulkRow]:
    """Rows of a `.json` file, or else CSV; raises ValueError listing every problem found."""
    if filename.lower().endswith(".json"):
        items = _json_items(text)
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "name" not in reader.fieldnames:
            raise ValueError(f"{filename}: the first line must be a CSV header with a 'name' column (and optionally 'scope' and 'id').")
        items = [(f"line {reader.line_num}", dict(row)) for row in reader]
    rows: list[BulkRow] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, item in items:
        unknown = set(item) - _KEYS - {None}
        name = str(item.get("name") or "").strip()
        scope = str(item.get("scope") or "all").strip()
        sub_id = str(item.get("id") or "").strip() or None
        if unknown:
            problems.append(f"{where}: unknown field(s) {sorted(str(u) for u in unknown)}; use name, scope, id.")
        if not name:
            problems.append(f"{where}: 'name' is empty.")
        try:
            validate_scope(scope, products, apis)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
        if sub_id is not None:
            if not _ID.match(sub_id):
                problems.append(f"{where}: id {sub_id!r} must be 1-64 letters, digits, '.', '_' or '-'.")
            elif sub_id in seen:
                problems.append(f"{where}: id {sub_id!r} is also used on {seen[sub_id]}.")
            seen[sub_id] = where
        rows.append(BulkRow(where, name, scope, sub_id))
    if not rows:
        problems.append(f"{filename}: no subscriptions in the file.")
    if problems:
        raise ValueError("\n".join(problems))
    return rows


def _json_items(text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"The file is not valid JSON: {exc}.") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError('The JSON file must be a list of objects like {"name": "team-a", "scope": "all"}.')
    return [(f"item {index}", item) for index, item in enumerate(data, start=1)]


async def create_all(repository: SubscriptionRepository, rows: list[BulkRow], on_done: Callable[[], None]) -> list[Created | Failed]:
    """Create every row, CONCURRENCY at a time; results in file order. `on_done` ticks once per row."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(row: BulkRow) -> Created | Failed:
        async with limit:
            try:
                if row.id is not None and await repository.get(row.id) is not None:
                    return Failed(row, f"a subscription with id {row.id!r} exists")
                sub, primary, secondary = await repository.create(row.name, row.scope, row.id)
                return Created(row, {**sub.public_view(), "primaryKey": primary, "secondaryKey": secondary})
            except Exception as exc:  # one row's storage error must not hide the keys of the others
                return Failed(row, f"{type(exc).__name__}: {exc}")
            finally:
                on_done()

    return list(await asyncio.gather(*(one(row) for row in rows)))


def to_csv(views: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["id", "name", "state", "scope", "created", "primaryKey", "secondaryKey"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(views)
    return out.getvalue()
