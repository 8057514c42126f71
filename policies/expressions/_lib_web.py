"""URLs and hashing: `Uri`, `WebUtility`, and the hash algorithms policies sign requests with (SHA-1/256/384/512,
MD5 and their HMACs). No other cryptography is offered (no keys leave the policy, nothing is encrypted)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import html
import urllib.parse
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._library import CONSTRUCTORS, enum_type, method, static, type_argument
from policies.expressions._limits import sized
from policies.expressions._types import BOOL, BYTES, STRING, register_class, register_type


class UriKind(enum.Enum):
    RelativeOrAbsolute = 0
    Absolute = 1
    Relative = 2


URI_KIND = enum_type(UriKind, ("UriKind", "System.UriKind"))


class Uri:
    """`new Uri("https://host/path?q")` (or a base and a relative part): its parts, as System.Uri names them."""

    def __init__(self, value: Any, relative: Any = None) -> None:
        base = str(value.AbsoluteUri if isinstance(value, Uri) else value)
        if isinstance(relative, str):
            base = urllib.parse.urljoin(base, relative)
        elif relative is not None and not isinstance(relative, UriKind):
            raise DotNetError("ArgumentException", "The relative part must be a string.")
        parts = urllib.parse.urlsplit(base)
        if not parts.scheme or not parts.netloc:
            raise DotNetError("UriFormatException", "Invalid URI: The format of the URI could not be determined.")
        self._parts = parts

    @property
    def Scheme(self) -> str:  # noqa: N802 - .NET's names
        return self._parts.scheme

    @property
    def Host(self) -> str:  # noqa: N802
        return self._parts.hostname or ""

    @property
    def Port(self) -> int:  # noqa: N802
        return self._parts.port or {"http": 80, "https": 443}.get(self._parts.scheme, -1)

    @property
    def AbsolutePath(self) -> str:  # noqa: N802
        return self._parts.path or "/"

    @property
    def Query(self) -> str:  # noqa: N802
        return f"?{self._parts.query}" if self._parts.query else ""

    @property
    def Fragment(self) -> str:  # noqa: N802
        return f"#{self._parts.fragment}" if self._parts.fragment else ""

    @property
    def PathAndQuery(self) -> str:  # noqa: N802
        return self.AbsolutePath + self.Query

    @property
    def AbsoluteUri(self) -> str:  # noqa: N802
        return urllib.parse.urlunsplit(self._parts._replace(path=self.AbsolutePath))

    @property
    def Authority(self) -> str:  # noqa: N802
        return self._parts.netloc

    @property
    def Segments(self) -> list[str]:  # noqa: N802
        path = self.AbsolutePath
        return ["/"] + [segment + "/" for segment in path.strip("/").split("/")[:-1]] + ([path.rsplit("/", 1)[1]] if path != "/" else [])

    def ToString(self) -> str:  # noqa: N802
        return self.AbsoluteUri


register_class(Uri, "Uri", "System")
CONSTRUCTORS["Uri"] = method(Uri, type_argument, 1, 2)
_UNRESERVED = "-._~"


def _well_formed(value: Any, kind: Any) -> bool:
    try:
        parts = urllib.parse.urlsplit(str(value))
    except ValueError:
        return False
    absolute = bool(parts.scheme and parts.netloc)
    return absolute if kind is UriKind.Absolute else not absolute if kind is UriKind.Relative else " " not in str(value)


static(
    "Uri",
    ("System.Uri",),
    EscapeDataString=method(lambda s: sized(urllib.parse.quote(s, safe=_UNRESERVED)), STRING, 1, costly=True),
    UnescapeDataString=method(lambda s: urllib.parse.unquote(s), STRING, 1, costly=True),
    EscapeUriString=method(lambda s: sized(urllib.parse.quote(s, safe=_UNRESERVED + ":/?#[]@!$&'()*+,;=%")), STRING, 1, costly=True),
    IsWellFormedUriString=method(_well_formed, BOOL, 2),
)
static(
    "WebUtility",
    ("System.Net.WebUtility",),
    UrlEncode=method(lambda s: None if s is None else sized(urllib.parse.quote_plus(s, safe="-_.!*()")), STRING, 1, costly=True),
    UrlDecode=method(lambda s: None if s is None else urllib.parse.unquote_plus(s), STRING, 1, costly=True),
    HtmlEncode=method(lambda s: None if s is None else sized(html.escape(s).replace("&#x27;", "&#39;")), STRING, 1, costly=True),
    HtmlDecode=method(lambda s: None if s is None else html.unescape(s), STRING, 1, costly=True),
)


def _data(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    raise DotNetError("ArgumentNullException" if value is None else "ArgumentException", "A byte array is required.")


class HashAlgorithm:
    """`SHA256.Create()` and friends: `ComputeHash(bytes)`; `Dispose()` (from `using`) does nothing."""

    def __init__(self, algorithm: str) -> None:
        self._algorithm = algorithm

    def ComputeHash(self, data: bytes, offset: int = 0, count: int | None = None) -> bytes:  # noqa: N802 - .NET's names
        chunk = _data(data)[offset : None if count is None else offset + count]
        return self._digest(chunk)

    def _digest(self, chunk: bytes) -> bytes:
        return hashlib.new(self._algorithm, chunk).digest()

    def Dispose(self) -> None:  # noqa: N802
        """Nothing to release."""


class Hmac(HashAlgorithm):
    """`new HMACSHA256(key)` and friends."""

    def __init__(self, algorithm: str, key: Any = None) -> None:
        super().__init__(algorithm)
        self._key = _data(key) if key is not None else b""

    @property
    def Key(self) -> bytes:  # noqa: N802
        return self._key

    def _digest(self, chunk: bytes) -> bytes:
        return hmac.new(self._key, chunk, self._algorithm).digest()


HASH = register_class(HashAlgorithm, "HashAlgorithm", "System.Security.Cryptography")
HMAC = register_class(Hmac, "HMAC", "System.Security.Cryptography")
for _name, _algorithm in (("SHA256", "sha256"), ("SHA1", "sha1"), ("SHA384", "sha384"), ("SHA512", "sha512"), ("MD5", "md5")):
    _names = (_name, f"{_name}Managed", f"{_name}CryptoServiceProvider")
    register_type(HASH, *_names, *(f"System.Security.Cryptography.{n}" for n in _names))
    static(
        _name,
        (f"System.Security.Cryptography.{_name}",),
        Create=method(lambda algorithm=_algorithm: HashAlgorithm(algorithm), HASH, 0),
        HashData=method(lambda data, algorithm=_algorithm: hashlib.new(algorithm, _data(data)).digest(), BYTES, 1, costly=True),
    )
    for _constructor in _names[1:]:
        CONSTRUCTORS[_constructor] = method(lambda algorithm=_algorithm: HashAlgorithm(algorithm), HASH, 0)
    _keyed = f"HMAC{_name}"
    register_type(HMAC, _keyed, f"System.Security.Cryptography.{_keyed}")
    CONSTRUCTORS[_keyed] = method(lambda key=None, algorithm=_algorithm: Hmac(algorithm, key), HMAC, 0, 1)
    static(
        _keyed,
        (f"System.Security.Cryptography.{_keyed}",),
        HashData=method(lambda key, data, algorithm=_algorithm: Hmac(algorithm, key)._digest(_data(data)), BYTES, 2, costly=True),
    )
