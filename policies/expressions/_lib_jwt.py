"""APIM's `Jwt` and `BasicAuthCredentials`: `token.AsJwt()`, `TryParseJwt(out var jwt)`, `AsBasic()`, and the
cast `(Jwt)context.Variables["jwt"]` of what `validate-jwt`/`validate-azure-ad-token` store there (the token's
claims), as in APIM. `AsJwt()` only reads the token: it proves nothing; validate it first.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
from typing import Any

import orjson

from policies.context import KeyValuePair
from policies.expressions._errors import DotNetError
from policies.expressions._library import instance, method
from policies.expressions._runtime import UTC
from policies.expressions._types import BOOL, register_class


def _claim_texts(value: Any) -> list[str]:
    """A claim as APIM's string[]: a list claim gives its items; true/false are lower case as in the token."""
    texts = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool):
            texts.append("true" if item else "false")
        elif isinstance(item, (dict, list)):
            texts.append(orjson.dumps(item).decode())
        else:
            texts.append("" if item is None else str(item))
    return texts


class JwtClaims:
    """`jwt.Claims`: claim name → its values (string[]); `GetValueOrDefault(name, "default")` joins them."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self._claims = {name: _claim_texts(value) for name, value in claims.items()}

    def __getitem__(self, name: str) -> list[str]:
        return self._claims[name]

    def GetValueOrDefault(self, name: str, default: Any = None) -> Any:  # noqa: N802 - APIM's names
        """With a string (or no) default the values come comma-joined, as APIM's extension gives them; with a
        string[] default (`new string[] { "" }`) they come as the array, as .NET's GetValueOrDefault does."""
        values = self._claims.get(name)
        if type(default) is list:
            return values if values is not None else default
        return ",".join(values) if values is not None else default

    def ContainsKey(self, name: str) -> bool:  # noqa: N802
        return name in self._claims

    def TryGetValue(self, name: str) -> tuple[bool, list[str] | None]:  # noqa: N802
        return name in self._claims, self._claims.get(name)

    @property
    def Count(self) -> int:  # noqa: N802
        return len(self._claims)

    def _enumerate(self) -> list[KeyValuePair]:
        return [KeyValuePair(name, values) for name, values in self._claims.items()]


def _time(value: Any) -> _dt.datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _dt.datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


class Jwt:
    """A JSON Web Token's header and claims, with APIM's property names."""

    def __init__(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> None:
        self._claims, self._header = claims, header or {}

    @classmethod
    def _cast(cls, value: Any) -> Jwt:
        """`(Jwt)x`: the claims a validation statement stored, or a token's text."""
        if isinstance(value, dict):
            return cls(value)
        if isinstance(value, str):
            parsed = parse_jwt(value)
            if parsed is not None:
                return parsed
        raise DotNetError("InvalidCastException", "The value is not a JWT.")

    def _text(self, name: str) -> str | None:
        value = self._claims.get(name)
        return None if value is None else ",".join(_claim_texts(value))

    @property
    def Id(self) -> str | None:  # noqa: N802 - APIM's names
        return self._text("jti")

    @property
    def Issuer(self) -> str | None:  # noqa: N802
        return self._text("iss")

    @property
    def Subject(self) -> str | None:  # noqa: N802
        return self._text("sub")

    @property
    def Audiences(self) -> list[str]:  # noqa: N802
        return _claim_texts(self._claims["aud"]) if "aud" in self._claims else []

    @property
    def Claims(self) -> JwtClaims:  # noqa: N802
        return JwtClaims(self._claims)

    @property
    def ExpirationTime(self) -> _dt.datetime | None:  # noqa: N802
        return _time(self._claims.get("exp"))

    @property
    def NotBefore(self) -> _dt.datetime | None:  # noqa: N802
        return _time(self._claims.get("nbf"))

    @property
    def IssuedAt(self) -> _dt.datetime | None:  # noqa: N802
        return _time(self._claims.get("iat"))

    @property
    def Type(self) -> str | None:  # noqa: N802
        value = self._header.get("typ")
        return value if isinstance(value, str) else None

    @property
    def Algorithm(self) -> str | None:  # noqa: N802
        value = self._header.get("alg")
        return value if isinstance(value, str) else None


def _segment(text: str) -> Any:
    padded = text + "=" * (-len(text) % 4)
    return orjson.loads(base64.urlsafe_b64decode(padded))


def parse_jwt(token: str) -> Jwt | None:
    """The token's header and claims, unverified; None when it is not a JWT (`AsJwt()` gives null then)."""
    parts = token.strip().removeprefix("Bearer ").strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = _segment(parts[0]), _segment(parts[1])
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return Jwt(claims, header)


class BasicAuthCredentials:
    """`AsBasic()` on an `Authorization: Basic …` value."""

    UserId: str
    Password: str

    def __init__(self, user: str, password: str) -> None:
        self.UserId, self.Password = user, password


def parse_basic(value: str) -> BasicAuthCredentials | None:
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        encoded = value.strip()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return BasicAuthCredentials(user, password) if colon else None


JWT = register_class(Jwt, "Jwt")
register_class(JwtClaims, "JwtClaims")
BASIC = register_class(BasicAuthCredentials, "BasicAuthCredentials")
instance(
    "string",
    AsJwt=method(parse_jwt, JWT, 0),
    TryParseJwt=method(lambda value: ((jwt := parse_jwt(value)) is not None, jwt), BOOL, 0, out=JWT),
    AsBasic=method(parse_basic, BASIC, 0),
    TryParseBasic=method(lambda value: ((basic := parse_basic(value)) is not None, basic), BOOL, 0, out=BASIC),
)
