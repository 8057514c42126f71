"""The policy statement contract, the registry of statements, declared settings, and the loader that builds them.

A statement is one module under `policies/statements/`: a class with the XML element name it handles, the
sections it may appear in, and a `load` classmethod that validates everything — attributes, children,
expressions — when the document is loaded. `run` then does only the per-request work. Registering a class
is what makes its element legal; any other element is a load error.

Attributes are declared once, as a `Settings` class whose typed fields say what each attribute is:

    class RateLimitSettings(Settings):
        calls: Value = attr(kind=int, minimum=1)          # required, expressions allowed, constants checked
        counter_key: Value | None = attr()                # optional: None when absent
        retry_after_header_name: str | None = attr()      # constant only: arrives as str, or None
        ignore_error: bool = attr(default=False)          # constant only, with a default

A field's XML name is its name with `-` for `_` (or `attr(name=…)`). `Value` fields allow `@( … )`; `str`,
`int`, `float` and `bool` fields refuse expressions and arrive converted. A field is required unless its type
is optional (`| None`) or it has a default. `loader.settings(element, RateLimitSettings)` validates the
element's attributes against the declaration (unknown ones are refused) and returns the typed instance.

Implementer's contract:
* `load(element, loader)` raises `PolicyLoadError` (through `loader.fail` / `loader.settings`) for any
  problem, and keeps compiled values (`policies.expressions.Value`) on the instance.
* `run(context)` reads and changes the `policies.context.Context`; it raises `PolicyError` to refuse or fail
  the request and `ReturnResponse` to answer; it never does configuration work.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from policies.context import Context
from policies.errors import PolicyError, PolicyLoadError, ReturnResponse, ServiceError
from policies.expressions import ExpressionError, ExpressionRuntimeError, Value, compile_value
from policies.url_allow_list import UrlAllowList
from policies.xml import PolicyElement

logger = logging.getLogger(__name__)

SECTIONS = ("inbound", "backend", "outbound", "on-error")
ALL_SECTIONS = frozenset(SECTIONS)
#: `context.LastError.Reason` of a statement that failed with an exception of no known kind (a bug; logged).
INTERNAL_ERROR = "InternalError"


class Statement:
    element: ClassVar[str]
    sections: ClassVar[frozenset[str]] = ALL_SECTIONS
    #: Other element names that load as this class (e.g. `llm-token-limit` for `azure-openai-token-limit`).
    aliases: ClassVar[tuple[str, ...]] = ()

    line: int = 0
    section: str = ""
    #: The element it was loaded from, for showing effective documents.
    node: PolicyElement | None = None

    @classmethod
    def load(cls, element: PolicyElement, loader: Loader) -> Statement:
        raise NotImplementedError

    @classmethod
    def expand(cls, element: PolicyElement, loader: Loader) -> list[Statement]:
        """The statements the element stands for in its section: itself, loaded.

        `include-fragment` overrides this to stand for the statements of the fragment it names.
        """
        statement = cls.load(element, loader)
        statement.line, statement.section, statement.node = element.line, loader.section, element
        return [statement]

    async def run(self, context: Context) -> None:
        raise NotImplementedError


StatementClass = TypeVar("StatementClass", bound=type[Statement])
_REGISTRY: dict[str, type[Statement]] = {}


def register(cls: StatementClass) -> StatementClass:
    """Class decorator: make the statement's element (and aliases) legal in documents."""
    for name in (cls.element, *cls.aliases):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Policy element <{name}> is registered twice ({_REGISTRY[name].__name__}, {cls.__name__}).")
        _REGISTRY[name] = cls
    return cls


def registered() -> Mapping[str, type[Statement]]:
    from policies import statements  # noqa: F401 - importing the package registers every statement

    return _REGISTRY


class _Missing:
    """No default was declared: the attribute is required unless its type is optional."""


_MISSING = _Missing()
_SPEC = "policy-attribute"


@dataclass(frozen=True)
class Attr:
    """One declared attribute of a policy element, as the loader checks it."""

    name: str
    required: bool = False
    #: Whether `@( … )` is allowed; APIM forbids expressions on some attributes.
    expressions: bool = True
    #: Constant values are converted (and validated) at load time: str, int, float or bool.
    kind: type = str
    choices: tuple[str, ...] = ()
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None


def attr(
    name: str | None = None,
    *,
    default: Any = _MISSING,
    kind: type | None = None,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """Declare a `Settings` field as an XML attribute; see the module docstring.

    `kind` is what a `Value` field's constants are converted to (str unless given); a constant-only field's
    kind is its type. `default` applies when the attribute is absent.
    """
    spec = {"name": name, "default": default, "kind": kind, "choices": choices, "minimum": minimum, "maximum": maximum}
    return field(metadata={_SPEC: spec})


@typing.dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(attr,))
class Settings:
    """Base of a statement's declared attributes: subclasses become frozen, keyword-only dataclasses."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True, kw_only=True)(cls)


class NoSettings(Settings):
    """An element that takes no attributes (APIM's `id` is always allowed and ignored)."""


SettingsType = TypeVar("SettingsType", bound=Settings)


@dataclass(frozen=True)
class _Field:
    """A declared field: the attribute spec, and whether the field holds a `Value` (expressions allowed)."""

    field: str
    spec: Attr
    is_value: bool


_CONSTANT_KINDS = (str, int, float, bool)


_DECLARED: dict[type[Settings], tuple[_Field, ...]] = {}


def _declared(cls: type[Settings]) -> tuple[_Field, ...]:
    """The attributes a settings class declares, read from its typed fields once per class."""
    declared = _DECLARED.get(cls)
    if declared is None:
        declared = _DECLARED[cls] = _read_declaration(cls)
    return declared


def _read_declaration(cls: type[Settings]) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    fields: list[_Field] = []
    for declared in dataclasses.fields(cls):
        options = declared.metadata.get(_SPEC)
        if options is None:
            raise TypeError(f"{cls.__name__}.{declared.name} must be declared with attr().")
        base, optional = _unwrap_optional(hints[declared.name])
        is_value = base is Value
        if not is_value and base not in _CONSTANT_KINDS:
            raise TypeError(f"{cls.__name__}.{declared.name}: use Value, str, int, float or bool (optionally | None).")
        if not is_value and options["kind"] is not None:
            raise TypeError(f"{cls.__name__}.{declared.name}: kind= is only for Value fields; the type is the kind.")
        default = options["default"]
        if optional and default is not _MISSING:
            raise TypeError(f"{cls.__name__}.{declared.name}: an optional field has no default (it is None when absent).")
        spec = Attr(
            name=options["name"] or declared.name.replace("_", "-"),
            required=not optional and default is _MISSING,
            expressions=is_value,
            kind=(options["kind"] or str) if is_value else base,
            choices=options["choices"],
            default=None if default is _MISSING else default,
            minimum=options["minimum"],
            maximum=options["maximum"],
        )
        fields.append(_Field(declared.name, spec, is_value))
    return tuple(fields)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """`X | None` → (X, True); `X` → (X, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) == 1:
            return members[0], True
    return hint, False


@dataclass
class Expansion:
    """How many elements fragments have added to the document being loaded (`include-fragment` bounds it)."""

    count: int = 0


@dataclass
class Loader:
    """What statements need at load time: named values, known backend ids and fragments, the section being loaded."""

    named_values: Mapping[str, str] = field(default_factory=dict)
    backend_ids: frozenset[str] | None = None
    section: str = "inbound"
    #: Backends (and pools) that name an embeddings deployment, for semantic-cache lookups; None: not checked.
    embeddings_backend_ids: frozenset[str] | None = None
    #: Policy fragments by id (their `<fragment>` XML), for `include-fragment`.
    fragments: Mapping[str, str] = field(default_factory=dict)
    #: The fragments being included around the element being loaded, outermost first (cycle detection).
    including: tuple[str, ...] = ()
    #: Shared by the copies made while loading one document; `load_document` starts a fresh one per document.
    expanded: Expansion = field(default_factory=Expansion)
    #: Where `base-url` and `send-request` may send (constant URLs are checked at load); None: not checked.
    allowed_urls: UrlAllowList | None = None
    #: The loggers `log-to-eventhub` may name (`GATEWAY_LOGGERS`); None: not checked.
    logger_ids: frozenset[str] | None = None

    def fail(self, element: PolicyElement, message: str) -> PolicyLoadError:
        return PolicyLoadError(message, element.tag, element.line)

    def check_url(self, element: PolicyElement, url: Value) -> None:
        """Refuse a constant URL the allow-list refuses, or that no list could allow (not http(s), user info, …);
        a computed one is checked when it runs."""
        if url.is_constant:
            refusal = (self.allowed_urls or UrlAllowList(anything=True)).refusal(str(url.constant))
            if refusal is not None:
                raise self.fail(element, f"{str(url.constant)[:200]!r} may not be sent to: {refusal}.")

    def check_backend_id(self, element: PolicyElement, backend_id: Value) -> None:
        """Refuse a constant backend id that is not configured (a computed one is checked when it runs)."""
        if backend_id.is_constant and self.backend_ids is not None and backend_id.constant not in self.backend_ids:
            known = ", ".join(sorted(self.backend_ids)) or "none configured"
            raise self.fail(element, f"Unknown backend-id {backend_id.constant!r}; configured: {known}.")

    def settings(self, element: PolicyElement, cls: type[SettingsType]) -> SettingsType:
        """Validate `element`'s attributes against what `cls` declares, and build the typed settings."""
        declared = _declared(cls)
        known = {item.spec.name for item in declared}
        unknown = sorted(set(element.attrib) - known - {"id"})
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise self.fail(element, f"Unknown attribute {unknown[0]!r}; allowed: {allowed}.")
        values = {item.field: self._attribute(element, item) for item in declared}
        return cls(**values)

    def no_attributes(self, element: PolicyElement) -> None:
        """Refuse any attribute on `element` (but APIM's `id`)."""
        self.settings(element, NoSettings)

    def _attribute(self, element: PolicyElement, item: _Field) -> Any:
        spec = item.spec
        raw = element.attrib.get(spec.name)
        if raw is None:
            if spec.required:
                raise self.fail(element, f"Attribute {spec.name!r} is required.")
            if spec.default is None:
                return None
            return Value.of(spec.default) if item.is_value else spec.default
        value = self.value(element, raw)
        if not value.is_constant:
            if not spec.expressions:
                raise self.fail(element, f"Attribute {spec.name!r} does not accept policy expressions.")
            return value
        constant = self._convert(element, spec, value.constant)
        return Value.of(constant) if item.is_value else constant

    def value(self, element: PolicyElement, raw: str) -> Value:
        """`raw` compiled: a literal (named values substituted) or an expression."""
        try:
            return compile_value(raw, self.named_values)
        except ExpressionError as exc:
            raise self.fail(element, str(exc)) from None

    def text(self, element: PolicyElement) -> Value:
        """The element's text content (a literal or an expression)."""
        return self.value(element, (element.text or "").strip())

    def children(self, element: PolicyElement, allowed: Iterable[str]) -> list[PolicyElement]:
        allowed = tuple(allowed)
        children = elements_of(element)
        for child in children:
            if child.tag not in allowed:
                raise self.fail(child, f"Unexpected element inside <{element.tag}>; allowed: {', '.join(allowed) or 'none'}.")
        return children

    def body(self, element: PolicyElement) -> list[Statement]:
        """The statements inside `element` (a `when`, `retry` or `limit-concurrency` body), in the current section."""
        return self.statements(elements_of(element))

    def statements(self, elements: Iterable[PolicyElement]) -> list[Statement]:
        """Load a list of statements (a section's, or a body) in the current section."""
        registry = registered()
        loaded: list[Statement] = []
        for element in elements:
            cls = registry.get(element.tag)
            if cls is None:
                raise self.fail(element, "Unknown policy element.")
            if self.section not in cls.sections:
                raise self.fail(element, f"Not allowed in <{self.section}>; allowed in: {', '.join(sorted(cls.sections))}.")
            loaded.extend(cls.expand(element, self))
        return loaded

    def _convert(self, element: PolicyElement, spec: Attr, raw: Any) -> Any:
        converter: Callable[[Any], Any] = _CONVERTERS[spec.kind]
        try:
            value = converter(raw)
        except (TypeError, ValueError):
            raise self.fail(element, f"Attribute {spec.name!r} has value {raw!r}: expected {_KIND_NAMES[spec.kind]}.") from None
        if spec.choices and value not in spec.choices:
            raise self.fail(element, f"Attribute {spec.name!r} has value {raw!r}: use one of {', '.join(spec.choices)}.")
        if spec.minimum is not None and value < spec.minimum:
            raise self.fail(element, f"Attribute {spec.name!r} has value {raw!r}: it must be at least {spec.minimum:g}.")
        if spec.maximum is not None and value > spec.maximum:
            raise self.fail(element, f"Attribute {spec.name!r} has value {raw!r}: it must be at most {spec.maximum:g}.")
        return value


def elements_of(element: PolicyElement) -> list[PolicyElement]:
    """The child elements of `element` (the parser builds only `PolicyElement`s)."""
    return [child for child in element if isinstance(child, PolicyElement)]


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text not in ("true", "false"):
        raise ValueError(raw)
    return text == "true"


_CONVERTERS: dict[type, Callable[[Any], Any]] = {str: str, int: lambda raw: int(str(raw).strip()), float: float, bool: _to_bool}
_KIND_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false"}


async def run_all(statements: Iterable[Statement], context: Context) -> None:
    """Run statements in order. Whatever one raises besides the pipeline's own signals — a `ServiceError` from a
    service it called (storage, identity, tokenizer), or any other exception — becomes a `PolicyError` naming the
    statement, so `<on-error>` runs with `context.LastError` set and the client gets the OpenAI error shape."""
    for statement in statements:
        try:
            await statement.run(context)
        except (PolicyError, ReturnResponse, ExpressionRuntimeError):
            raise
        except ServiceError as error:
            raise PolicyError(statement.element, error.code, error.message, error.response()) from error
        except Exception as error:
            logger.exception("<%s> failed unexpectedly.", statement.element)
            raise PolicyError(statement.element, INTERNAL_ERROR, f"<{statement.element}> failed.", ServiceError().response()) from error


def as_bool(value: object, source: str) -> bool:
    """A condition's value as a bool; anything but a boolean (or "true"/"false") is a run-time error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ExpressionRuntimeError(f"Condition {source!r} must be true or false, not {value!r}.")
