"""The owner of a subscription: APIM's user, which policies read as `context.User`.

An owner is optional. Operators set it with the CLI, so its fields reach policy expressions (and through them
headers, logs and counter keys): each is checked and bounded here, before it is stored.

Stored on the subscription's row as `ownerId`, `ownerEmail`, `ownerFirstName`, `ownerLastName`, `ownerNote`,
`ownerGroups` (comma-separated) and `ownerRegistered` (when the owner was first set, ISO 8601 UTC); a row
without `ownerId` has no owner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Ids and group names: what APIM allows in resource names, plus `.` and `@` (an email as the id).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,79}")
_EMAIL = re.compile(r"[^@\s,;<>\"]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_EMAIL = 254
MAX_NAME = 100
MAX_NOTE = 1000
MAX_GROUPS = 32


@dataclass(frozen=True)
class Owner:
    id: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    note: str = ""
    groups: tuple[str, ...] = ()
    #: When the owner was first set (ISO 8601 UTC): APIM's `User.RegistrationDate`.
    registered: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "email": self.email, "firstName": self.first_name, "lastName": self.last_name,
            "note": self.note, "groups": list(self.groups), "registered": self.registered,
        }  # fmt: skip


def make_owner(
    owner_id: str | None, email: str = "", name: str = "", note: str = "", groups: Iterable[str] = (), registered: str | None = None
) -> Owner:
    """A checked owner; ValueError naming the field otherwise. The id defaults to the email; `name` is split
    into first and last name at its first space."""
    email = email.strip()
    if email and (len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email)):
        raise ValueError(f"Owner email {email[:100]!r} is not an email address (at most {MAX_EMAIL} characters).")
    owner_id = owner_id or email
    if not owner_id:
        raise ValueError("An owner needs an id or an email.")
    if not _NAME.fullmatch(owner_id):
        raise ValueError(f"Owner id {owner_id[:100]!r}: use up to 80 letters, digits and _ . @ -, starting with a letter, digit or _.")
    first, _, last = " ".join(name.split()).partition(" ")
    for field_name, value, bound in (("name", name, MAX_NAME), ("note", note, MAX_NOTE)):
        if len(value) > bound or _CONTROL.search(value):
            raise ValueError(f"Owner {field_name}: at most {bound} characters, and no control characters.")
    unique = tuple(dict.fromkeys(group.strip() for group in groups if group.strip()))
    if len(unique) > MAX_GROUPS:
        raise ValueError(f"An owner belongs to at most {MAX_GROUPS} groups (got {len(unique)}).")
    for group in unique:
        if not _NAME.fullmatch(group):
            raise ValueError(f"Owner group {group[:100]!r}: use up to 80 letters, digits and _ . @ -, starting with a letter, digit or _.")
    when = registered or datetime.now(UTC).isoformat(timespec="seconds")
    return Owner(owner_id, email, first, last, note, unique, when)


def owner_properties(owner: Owner | None) -> dict[str, str]:
    """The row properties that store `owner` (none for no owner)."""
    if owner is None:
        return {}
    return {
        "ownerId": owner.id, "ownerEmail": owner.email, "ownerFirstName": owner.first_name, "ownerLastName": owner.last_name,
        "ownerNote": owner.note, "ownerGroups": ",".join(owner.groups), "ownerRegistered": owner.registered,
    }  # fmt: skip


def owner_from(entity: Mapping[str, Any]) -> Owner | None:
    """The owner stored on a subscription row, or None."""
    owner_id = entity.get("ownerId")
    if not owner_id:
        return None
    groups = tuple(group for group in str(entity.get("ownerGroups", "")).split(",") if group)
    return Owner(
        str(owner_id), str(entity.get("ownerEmail", "")), str(entity.get("ownerFirstName", "")), str(entity.get("ownerLastName", "")),
        str(entity.get("ownerNote", "")), groups, str(entity.get("ownerRegistered", "")),
    )  # fmt: skip
