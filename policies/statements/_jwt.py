"""What `validate-jwt` and `validate-azure-ad-token` share: where the token is read from, how it is verified,
the `<required-claims>` check, and what a refusal looks like.

A refusal answers with `failed-validation-httpcode` (401 unless set) and `failed-validation-error-message`
(by default the message of the failure). A 401 carries `WWW-Authenticate: Bearer error="invalid_token"`, or
a bare `Bearer` challenge when no token was sent (RFC 6750 §3.1). `context.LastError.Reason` uses APIM's names:

    TokenNotPresent            no token in the header, query parameter or token-value (or not under require-scheme)
    JwtInvalid                 malformed; an algorithm other than RS256/RS384/RS512/PS256/ES256/HS256 (`none`
                               included); not valid yet (`nbf`, `iat`); any other failure
    TokenSignatureKeyNotFound  no configured or published key fits the token's `alg` and `kid`, or the
                               identity provider's keys could not be fetched
    TokenSignatureInvalid      no candidate key verifies the signature
    TokenExpired               `exp` has passed (beyond clock-skew)
    TokenAudienceNotAllowed    `aud` is none of the allowed audiences
    TokenIssuerNotAllowed      `iss` is none of the allowed issuers
    TokenClaimNotFound         a required claim is absent (`exp`, and `aud`/`iss` when they are checked, included)
    TokenClaimValueNotAllowed  a required claim, or the client application id, has a value that is not allowed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PyJWT (with cryptography) loads with the first token checked, not with the statements
    import jwt
    from jwt.types import Options

from policies.context import Context
from policies.errors import PolicyError, PolicyResponse
from policies.expressions import Value
from policies.jwks import SUPPORTED_ALGORITHMS, OpenIdKeys, SigningKey, SigningKeysUnavailable
from policies.statement import Loader, Settings, Statement, attr
from policies.xml import PolicyElement


class TokenSettings(Settings):
    """The attributes both statements take: where the token is, and what a refusal looks like."""

    header_name: Value | None = attr()
    query_parameter_name: Value | None = attr()
    token_value: Value | None = attr()
    failed_validation_httpcode: Value = attr(kind=int, minimum=100, maximum=599, default=401)
    failed_validation_error_message: Value | None = attr()
    output_token_variable_name: str | None = attr()


class ClaimSettings(Settings):
    name: str = attr()
    match: str = attr(choices=("all", "any"), default="all")
    separator: str | None = attr()


class TokenRejected(Exception):
    """A token failed validation; the statement turns it into its refusal."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TokenSource:
    """Where the token is: a header, a query parameter, or the value of an expression."""

    #: "header-name", "query-parameter-name" or "token-value".
    kind: str
    #: The header's or query parameter's name, or the token itself.
    value: Value
    #: The scheme an `Authorization` header must use; like APIM, other headers ignore it.
    scheme: str | None = None

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader, settings: TokenSettings, default_header: str | None, scheme: str | None) -> TokenSource:
        given = [
            (kind, value)
            for kind, value in (
                ("header-name", settings.header_name),
                ("query-parameter-name", settings.query_parameter_name),
                ("token-value", settings.token_value),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise loader.fail(element, "Set only one of 'header-name', 'query-parameter-name' and 'token-value'.")
        if given:
            return cls(*given[0], scheme)
        if default_header is None:
            raise loader.fail(element, "Set one of 'header-name', 'query-parameter-name' and 'token-value'.")
        return cls("header-name", Value.of(default_header), scheme)

    def extract(self, context: Context) -> str | None:
        """The token, without its scheme; None when there is none."""
        value = _text(self.value.evaluate(context))
        if self.kind == "token-value":
            token = value
        elif self.kind == "query-parameter-name":
            token = context.Request.Url.Query.GetValueOrDefault(value) or ""
        else:
            token = self._unwrap(context.Request.Headers.GetValueOrDefault(value) or "", value.lower() == "authorization")
        return token.strip() or None

    def _unwrap(self, value: str, authorization: bool) -> str:
        # A JWT has no spaces, so a first word followed by a space is a scheme such as "Bearer".
        scheme, space, rest = value.strip().partition(" ")
        if self.scheme is not None and authorization:
            return rest if space and scheme.lower() == self.scheme.lower() else ""
        return rest if space else value


@dataclass(frozen=True)
class RequiredClaim:
    """`<claim name="…" match="all|any" separator=","><value>…</value></claim>`."""

    name: str
    match_all: bool
    separator: str | None
    values: tuple[Value, ...]

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> RequiredClaim:
        settings = loader.settings(element, ClaimSettings)
        values = tuple(loader.text(child) for child in loader.children(element, ("value",)))
        if settings.separator == "":
            raise loader.fail(element, "Attribute 'separator' must not be empty.")
        return cls(settings.name, settings.match == "all", settings.separator, values)

    def satisfied_by(self, present: Any, context: Context) -> bool:
        """Whether the token's value holds all (or any) of the required values; any value when none are listed."""
        if not self.values:
            return True
        actual = set(claim_values(present, self.separator))
        found = [_text(value.evaluate(context)) in actual for value in self.values]
        return all(found) if self.match_all else any(found)


def check_claims(required: Sequence[RequiredClaim], claims: Mapping[str, Any], context: Context) -> None:
    """Refuse when a required claim is absent (all absent ones are named) or holds a value not allowed."""
    missing = [claim.name for claim in required if claims.get(claim.name) is None]
    if missing:
        raise missing_claims(missing)
    for claim in required:
        if not claim.satisfied_by(claims[claim.name], context):
            raise claim_not_allowed(claim.name, claims[claim.name])


def claim_values(value: Any, separator: str | None = None) -> list[str]:
    """A claim as texts: a list claim gives its items, a `separator` splits multi-valued strings."""
    texts = [_claim_text(item) for item in (value if isinstance(value, list) else [value])]
    if separator:
        texts = [part.strip() for text in texts for part in text.split(separator)]
    return texts


def missing_claims(names: Iterable[str]) -> TokenRejected:
    return TokenRejected("TokenClaimNotFound", f"JWT is missing the following claims: {', '.join(names)}.")


def claim_not_allowed(name: str, value: Any) -> TokenRejected:
    return TokenRejected("TokenClaimValueNotAllowed", f"Claim {name} value of {','.join(claim_values(value))} is not allowed.")


def token_header(token: str) -> tuple[str, str | None]:
    """The token's `alg` and `kid`, read before the signature is checked so that the right keys are found."""
    import jwt

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("JwtInvalid", "JWT not valid: the token is malformed.") from None
    algorithm, key_id = header.get("alg"), header.get("kid")
    if not isinstance(algorithm, str) or algorithm not in SUPPORTED_ALGORITHMS:
        raise TokenRejected("JwtInvalid", f"JWT not valid: algorithm {algorithm!r} is not accepted.")
    return algorithm, key_id if isinstance(key_id, str) else None


def decode(
    token: str,
    algorithm: str,
    key_id: str | None,
    keys: Iterable[SigningKey],
    *,
    audiences: Sequence[str],
    issuers: Sequence[str],
    leeway: float = 0,
    require_expiration: bool = True,
) -> dict[str, Any]:
    """Verify the signature with the first key that fits, then `exp`/`nbf`/`iat`, `iss` and `aud`; the claims.

    `algorithms` is always the single algorithm the chosen key's type allows, so a symmetric secret can never
    be offered to an RSA algorithm or the other way round (RFC 8725 §2.1). Empty `audiences` or `issuers`
    skip that check.
    """
    import jwt

    candidates = [key for key in keys if key.accepts(algorithm, key_id)]
    if not candidates:
        raise TokenRejected("TokenSignatureKeyNotFound", "JWT not valid: no signing key matches the token.")
    options: Options = {
        "require": ["exp"] if require_expiration else [],
        "verify_aud": bool(audiences),
        "verify_iss": bool(issuers),
        "enforce_minimum_key_length": True,
    }
    for key in candidates:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                options=options,
                audience=list(audiences) or None,
                issuer=list(issuers) or None,
                leeway=leeway,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _rejection(exc) from None
    raise TokenRejected("TokenSignatureInvalid", "JWT not valid: signature validation failed.")


def _rejection(exc: jwt.PyJWTError) -> TokenRejected:
    import jwt

    if isinstance(exc, jwt.MissingRequiredClaimError):
        return missing_claims([exc.claim])
    failures: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
        (jwt.ExpiredSignatureError, "TokenExpired", "JWT not valid: the token has expired."),
        (jwt.InvalidAudienceError, "TokenAudienceNotAllowed", "JWT not valid: the audience is not allowed."),
        (jwt.InvalidIssuerError, "TokenIssuerNotAllowed", "JWT not valid: the issuer is not allowed."),
        (jwt.ImmatureSignatureError, "JwtInvalid", "JWT not valid: the token is not valid yet."),
    )
    for kind, reason, message in failures:
        if isinstance(exc, kind):
            return TokenRejected(reason, message)
    return TokenRejected("JwtInvalid", f"JWT not valid: {str(exc).rstrip('.')}.")


async def published_keys(context: Context, url: str, key_id: str | None, tenant_id: str | None = None) -> OpenIdKeys:
    """The keys an OpenID configuration publishes; unavailable keys refuse the token rather than fail the gateway."""
    try:
        return await context.services.signing_keys.get(url, key_id, tenant_id=tenant_id)
    except SigningKeysUnavailable:
        raise TokenRejected("TokenSignatureKeyNotFound", "JWT not valid: the identity provider's signing keys are unavailable.") from None


def load_values(element: PolicyElement, loader: Loader, item: str) -> tuple[Value, ...]:
    """The texts of a list element such as `<audiences><audience>…</audience></audiences>`; at least one."""
    loader.no_attributes(element)
    values = tuple(loader.text(child) for child in loader.children(element, (item,)))
    if not values:
        raise loader.fail(element, f"Add at least one <{item}>.")
    return values


def load_claims(element: PolicyElement, loader: Loader) -> tuple[RequiredClaim, ...]:
    loader.no_attributes(element)
    return tuple(RequiredClaim.load(child, loader) for child in loader.children(element, ("claim",)))


def evaluate_all(values: Iterable[Value], context: Context) -> list[str]:
    return [_text(value.evaluate(context)) for value in values]


class TokenValidation(Statement):
    """Both statements at run time: find the token, verify it, check the required claims, publish the claims."""

    sections = frozenset({"inbound"})

    def __init__(self, source: TokenSource, settings: TokenSettings, claims: tuple[RequiredClaim, ...]) -> None:
        self.source = source
        self.status = settings.failed_validation_httpcode
        self.message = settings.failed_validation_error_message
        self.variable = settings.output_token_variable_name
        self.claims = claims

    async def verify(self, token: str, context: Context) -> dict[str, Any]:
        """Check the signature and registered claims; return the token's claims or raise TokenRejected."""
        raise NotImplementedError

    async def run(self, context: Context) -> None:
        try:
            token = self.source.extract(context)
            if token is None:
                raise TokenRejected("TokenNotPresent", "JWT not present.")
            claims = await self.verify(token, context)
            check_claims(self.claims, claims, context)
        except TokenRejected as rejected:
            raise self._refusal(rejected, context) from None
        if self.variable:
            context.Variables.set(self.variable, claims)

    def _refusal(self, rejected: TokenRejected, context: Context) -> PolicyError:
        status = int(self.status.evaluate(context))
        message = _text(self.message.evaluate(context)) if self.message is not None else rejected.message
        challenge = "Bearer" if rejected.reason == "TokenNotPresent" else 'Bearer error="invalid_token"'
        headers = {"WWW-Authenticate": challenge} if status == 401 else None
        return PolicyError(self.element, rejected.reason, rejected.message, PolicyResponse.error(status, message, headers))


def _claim_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _text(value: object) -> str:
    return "" if value is None else str(value)
