"""The policy statement contract, the registry of statements, and the loader that builds them.

A statement is one module under `policies/statements/`: a class with the XML element name it handles, the
sections it may appear in, and a `load` classmethod that validates everything — attributes, children,
expressions — when the document is loaded. `run` then does only the per-request work. Registering a class
is what makes its element legal; any other element is a load error.

Implementer's contract:
* `load(element, loader)` raises `PolicyLoadError` (through `loader.fail` / `loader.attributes`) for any
  problem, and keeps compiled values (`policies.expressions.Value`) on the instance.
* `run(context)` reads and changes the `policies.context.Context`; it raises `PolicyError` to refuse or fail
  the request and `ReturnResponse` to answer; it never does configuration work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from policies.context import Context
from policies.errors import PolicyLoadError
from policies.expressions import ExpressionError, ExpressionRuntimeError, Value, compile_value
from policies.xml import PolicyElement

SECTIONS = ("inbound", "backend", "outbound", "on-error")
ALL_SECTIONS = frozenset(SECTIONS)


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

    async def run(self, context: Context) -> None:
        raise NotImplementedError


S = TypeVar("S", bound=type[Statement])
_REGISTRY: dict[str, type[Statement]] = {}


def register(cls: S) -> S:
    """Class decorator: make the statement's element (and aliases) legal in documents."""
    for name in (cls.element, *cls.aliases):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Policy element <{name}> is registered twice ({_REGISTRY[name].__name__}, {cls.__name__}).")
        _REGISTRY[name] = cls
    return cls


def registered() -> Mapping[str, type[Statement]]:
    from policies import statements  # noqa: F401 - importing the package registers every statement

    return _REGISTRY


@dataclass(frozen=True)
class Attr:
    """One declared attribute of a policy element."""

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


@dataclass
class Loader:
    """What statements need at load time: named values, known backend ids, the section being loaded."""

    named_values: Mapping[str, str] = field(default_factory=dict)
    backend_ids: frozenset[str] | None = None
    section: str = "inbound"
    #: Backends (and pools) that name an embeddings deployment, for semantic-cache lookups; None: not checked.
    embeddings_backend_ids: frozenset[str] | None = None

    def fail(self, element: PolicyElement, message: str) -> PolicyLoadError:
        return PolicyLoadError(message, element.tag, element.line)

    def attributes(self, element: PolicyElement, specs: Iterable[Attr]) -> dict[str, Value | None]:
        """Validate `element`'s attributes against `specs` and compile each value; absent optional ones are None."""
        specs = list(specs)
        known = {spec.name for spec in specs}
        unknown = sorted(set(element.attrib) - known - {"id"})
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise self.fail(element, f"Unknown attribute {unknown[0]!r}; allowed: {allowed}.")
        values: dict[str, Value | None] = {}
        for spec in specs:
            raw = element.attrib.get(spec.name)
            if raw is None:
                if spec.required:
                    raise self.fail(element, f"Attribute {spec.name!r} is required.")
                values[spec.name] = None if spec.default is None else self.constant(spec.default)
                continue
            values[spec.name] = self.value(element, raw, spec)
        return values

    def value(self, element: PolicyElement, raw: str, spec: Attr | None = None) -> Value:
        try:
            value = compile_value(raw, self.named_values)
        except ExpressionError as exc:
            raise self.fail(element, str(exc)) from None
        if spec is None:
            return value
        if not value.is_constant:
            if not spec.expressions:
                raise self.fail(element, f"Attribute {spec.name!r} does not accept policy expressions.")
            return value
        return self.constant(self._convert(element, spec, value.constant))

    def constant(self, value: Any) -> Value:
        return Value.of(value)

    def text(self, element: PolicyElement) -> Value:
        """The element's text content (a literal or an expression)."""
        return self.value(element, (element.text or "").strip())

    def children(self, element: PolicyElement, allowed: Iterable[str]) -> list[PolicyElement]:
        allowed = tuple(allowed)
        children: list[PolicyElement] = list(element)  # type: ignore[arg-type]
        for child in children:
            if child.tag not in allowed:
                raise self.fail(child, f"Unexpected element inside <{element.tag}>; allowed: {', '.join(allowed) or 'none'}.")
        return children

    def statements(self, elements: Iterable[PolicyElement]) -> list[Statement]:
        """Load a list of statements (a section's, or a `when`/`retry` body) in the current section."""
        registry = registered()
        loaded: list[Statement] = []
        for element in elements:
            cls = registry.get(element.tag)
            if cls is None:
                raise self.fail(element, "Unknown policy element.")
            if self.section not in cls.sections:
                raise self.fail(element, f"Not allowed in <{self.section}>; allowed in: {', '.join(sorted(cls.sections))}.")
            statement = cls.load(element, self)
            statement.line = element.line
            statement.section = self.section
            statement.node = element
            loaded.append(statement)
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
    for statement in statements:
        await statement.run(context)


def as_bool(value: object, source: str) -> bool:
    """A condition's value as a bool; anything but a boolean (or "true"/"false") is a run-time error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ExpressionRuntimeError(f"Condition {source!r} must be true or false, not {value!r}.")
