"""Members of classes and of dynamic values: reflection over the context's and library classes' declared
members (properties read by one C-level path reader, methods called positionally), and members of JSON values
and `object`s picked by the run-time type."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from policies.expressions._base import NOT_CONSTANT, _context_root, _Evaluator, _Node
from policies.expressions._calls import CALL_ERRORS, _Arguments, _fits, _Members, failure
from policies.expressions._errors import DotNetError, ExpressionRuntimeError, _runtime_error, excerpt
from policies.expressions._lib_json import convert_to
from policies.expressions._lib_text import CULTURE
from policies.expressions._library import INSTANCE
from policies.expressions._runtime import _FAMILIES, _NullChain, converter, default_of, family_of, type_name
from policies.expressions._types import BOOL, DYNAMIC, TYPE_NAMES, CType, accepts, members

#: Families of C# value types, whose nullable forms (`int?`, `DateTime?`) have HasValue and Value.
_NULLABLE = frozenset({"number", "bool", "char", "datetime", "timespan", "guid"})


class _ClassMembers(_Members):
    """`x.Name` and `x.Name(…)`: dispatched on the receiver's static type to the library, a class, or run time."""

    def member(self, node: _Node, safe: bool) -> _Node:
        name_token = self.expect_name("a member name after '.'")
        name = name_token.value
        type_arg = self.type_argument()
        family = node.type.family
        if family in ("null", "void", "lambda"):
            raise self.fail(f"Cannot use '{name}' on {'null' if family == 'null' else 'a value-less call' if family == 'void' else 'a lambda'}")
        if family in _NULLABLE and name in ("HasValue", "Value") and type_arg is None and not self.at("("):
            return self.nullable(node, name)
        if family == "class":
            return self.class_member(node, name_token.value, type_arg, safe)
        if family == "dynamic":
            return self.dynamic_member(node, name, type_arg, safe)
        builtins = INSTANCE.get(family, {})
        builtin = builtins.get(name)
        if builtin is None:
            raise self.fail(f"Unsupported member '{name}' on {node.type.name}", f": use one of {', '.join(sorted(builtins)) or 'none'}.")
        return self.builtin_member(node, name, builtin, type_arg, safe)

    def nullable(self, node: _Node, name: str) -> _Node:
        """`x.HasValue` and `x.Value` on a value that may be null (C#'s `DateTime?`, `int?`)."""
        fn, end = node.fn, self.tokens[self.position - 1].end
        if name == "HasValue":
            return _Node(lambda frame: fn(frame) is not None, BOOL, node.start, end)
        receiver = self.receiver(node, "read 'Value' (the nullable has no value)", False)
        return _Node(receiver, node.type, node.start, end)

    def dynamic_member(self, node: _Node, name: str, type_arg: CType | None, safe: bool) -> _Node:
        """A member of a value whose type is known only at run time: picked by that type."""
        candidates = {family: table[name] for family, table in INSTANCE.items() if name in table}
        kinds = _class_member_kinds(name)
        if not candidates and not kinds:
            raise self.fail(f"Unsupported member '{name}' on {node.type.name}", ": cast the value to its type first, e.g. ((string)x).Length.")
        called = self.at("(")
        if not any(b.prop or b.arity is None for b in candidates.values()) and not called and "property" not in kinds:
            raise self.fail(f"'{name}' is a method: call it as {name}(…)")
        if not any(b.arity is not None for b in candidates.values()) and called and "method" not in kinds:
            raise self.fail(f"'{name}' is a property, not a method")
        lambdas = next((b.lambdas for b in candidates.values() if b.lambdas), None)
        call = self.arguments(lambdas, DYNAMIC) if called else None
        if call is not None and call.named:
            raise self.fail(f"'{name}' takes no named arguments here")
        arguments = [a for a in call.positional if a.type != CULTURE] if call else []
        if not kinds and not any(_fits(b, called, len(arguments)) for b in candidates.values()):
            raise self.fail(f"Wrong number of arguments ({len(arguments)}) for '{name}'")
        receiver = self.receiver(node, f"{'call' if call else 'read'} '{name}'", safe)
        evaluators = tuple(a.fn for a in arguments)
        source, start, text = self.source, node.start, self.text(node)

        def dynamic(frame: Any) -> Any:
            value = receiver(frame)
            values = [evaluate(frame) for evaluate in evaluators]
            family = _FAMILIES.get(type(value)) or family_of(value)
            builtin = candidates.get(family)
            try:
                if builtin is not None and _fits(builtin, called, len(values)):
                    options = {"T": type_arg or DYNAMIC} if builtin.generic else {}
                    return builtin.impl(value, *values, **options)
                member = members(type(value)).get(name) if family == "class" else None  # type: ignore[arg-type]
                if member is not None and (member.parameters is not None) == called:
                    attribute = getattr(value, name)
                    return attribute(*values) if called else attribute
            except DotNetError as exc:
                raise failure(source, start, f"'{name}' on '{text}' failed", exc) from None
            except CALL_ERRORS as exc:
                given = ", ".join(type_name(v) for v in values)
                raise failure(source, start, f"'{name}' on '{text}' cannot take ({given})", exc) from None
            raise _runtime_error(source, f"'{name}' is not available on {type_name(value)} '{text}'", "InvalidOperationException", start)

        end = call.end if call else self.tokens[self.position - 1].end
        returns = (
            next(iter(candidates.values())).result(DYNAMIC, [a.type for a in arguments], type_arg) if len(candidates) == 1 and not kinds else DYNAMIC
        )
        return _Node(dynamic, returns if returns.family not in ("void",) else DYNAMIC, node.start, end, effect=called)

    def class_member(self, node: _Node, name: str, type_arg: CType | None, safe: bool) -> _Node:
        cls = node.type.cls
        assert cls is not None
        declared = members(cls)
        member = declared.get(name)
        if member is None:
            raise self.fail(f"Unsupported member '{name}' on {node.type.name}", f": use one of {', '.join(sorted(declared)) or 'none'}.")
        if member.parameters is None:
            if self.at("(") or type_arg is not None:
                raise self.fail(f"'{name}' on {node.type.name} is a property, not a method")
            end = self.tokens[self.position - 1].end
            if node.path is not None and not safe:
                path = (*node.path, (name, end))
                return _Node(self.path_reader(path, node.start), member.type, node.start, end, path=path)
            receiver = self.receiver(node, f"read '{name}'", safe)
            return _Node(lambda frame: getattr(receiver(frame), name), member.type, node.start, end)
        if not self.at("("):
            raise self.fail(f"'{name}' on {node.type.name} is a method: call it as {member.usage(name)}")
        if type_arg is not None and not member.generic:
            raise self.fail(f"'{name}' on {node.type.name} is not generic", f": call it as {member.usage(name)}.")
        call = self.arguments(out=member.out)
        if member.out is not None and call.out is None:
            raise self.fail(f"'{name}' needs an 'out' argument: call it as {member.usage(name)}")
        bound = self.bind(member.parameters or (), member.hints, name, member.usage(name), call)
        if type_arg is not None:
            bound["T"] = _Node(lambda _: type_arg.name, DYNAMIC, node.start, node.end, type_arg.name)
        keyword_only = {p.name for p in member.parameters or () if p.kind is p.KEYWORD_ONLY}
        fn = self.invoke_method(node, safe, name, bound, keyword_only, call.out)
        returns = member.type
        if member.generic and member.returns_dynamic and type_arg is not None:
            returns, fn = type_arg, _converted(fn, type_arg, self.source, node.start)
        return _Node(fn, returns, node.start, call.end, effect=True)

    def path_reader(self, path: tuple[tuple[str, int], ...], start: int) -> _Evaluator:
        """`context.A.B.C` read by one C-level attrgetter; a null on the way gets the usual message."""
        read = operator.attrgetter(".".join(name for name, _ in path))
        root, source = self.root, self.source

        def null_on_the_way(context: Any) -> ExpressionRuntimeError:
            value = context
            for (name, end), (following, _) in zip(path, path[1:]):
                value = getattr(value, name)
                if value is None:
                    text = excerpt(source, start, end)
                    return _runtime_error(
                        source, f"Cannot read '{following}': '{text}' is null (use '?.' to get null instead)", "NullReferenceException", start
                    )
            return _runtime_error(source, "A context member could not be read", "NullReferenceException", start)

        if root is _context_root:

            def read_context(frame: Any) -> Any:
                try:
                    return read(frame)
                except AttributeError:
                    raise null_on_the_way(frame) from None

            return read_context

        def read_frame(frame: Any) -> Any:
            try:
                return read(frame.context)
            except AttributeError:
                raise null_on_the_way(frame.context) from None

        return read_frame

    def bind(self, parameters: tuple[Any, ...], hints: Any, name: str, usage: str, call: _Arguments) -> dict[str, _Node]:
        """C# argument binding: positional arguments fill parameters in order, named ones by name."""
        hint = f": use {usage}."
        if len(call.positional) > len(parameters):
            raise self.fail(f"Too many arguments ({len(call.positional)}) for '{name}'", hint)
        bound = {parameter.name: argument for parameter, argument in zip(parameters, call.positional)}
        names = [parameter.name for parameter in parameters]
        for key, argument in call.named.items():
            if key not in names:
                raise self.fail(f"Unknown named argument '{key}' for '{name}'", hint)
            if key in bound:
                raise self.fail(f"Argument '{key}' of '{name}' is given twice", hint)
            bound[key] = argument
        for parameter in parameters:
            if parameter.name not in bound and parameter.default is parameter.empty:
                raise self.fail(f"Missing argument '{parameter.name}' for '{name}'", hint)
        for key, argument in bound.items():
            if not accepts(hints.get(key, DYNAMIC), argument.type):
                raise self.fail(f"Argument '{key}' of '{name}' must be {hints[key].name}, not {argument.type.name}")
        positional = [p.name for p in parameters if p.kind is not p.KEYWORD_ONLY]
        given = [key for key in positional if key in bound]
        if given != positional[: len(given)]:
            raise self.fail(f"'{name}' needs its arguments in order here", hint)
        return bound

    def invoke_method(self, node: _Node, safe: bool, name: str, bound: dict[str, _Node], keyword_only: set[str], out: Any) -> _Evaluator:
        """Calls a context or library class method: arguments positionally, keyword-only ones (`T`) by name.
        The receiver's null check is done here rather than by a wrapper: these calls are the hot path."""
        source, start, end, text = self.source, node.start, node.end, self.text(node)
        receiver = node.fn
        order = [key for key in bound if key not in keyword_only and key != "T"]
        named = [key for key in bound if key in keyword_only or key == "T"]
        positional = tuple(bound[key].fn for key in order)
        keyword_fns = tuple((key, bound[key].fn) for key in named)
        constants = tuple(bound[key].constant for key in order)
        fixed = all(value is not NOT_CONSTANT for value in constants)
        fixed_keywords = {key: bound[key].constant for key in named} if all(bound[k].constant is not NOT_CONSTANT for k in named) else None

        def invoke(frame: Any) -> Any:
            target = receiver(frame)
            if target is None:
                if safe:
                    raise _NullChain
                raise _runtime_error(
                    source,
                    f"Cannot call '{name}': '{excerpt(source, start, end)}' is null (use '?.' or '?[' to get null instead)",
                    "NullReferenceException",
                    start,
                )
            arguments = constants if fixed else [evaluate(frame) for evaluate in positional]
            keywords = fixed_keywords if fixed_keywords is not None else {key: evaluate(frame) for key, evaluate in keyword_fns}
            try:
                result = getattr(target, name)(*arguments, **keywords)
            except CALL_ERRORS as exc:
                detail = f": {exc}" if isinstance(exc, ValueError) and str(exc) else ""
                raise failure(source, start, f"Calling '{name}' on '{text}' failed{detail}", exc) from None
            return result if out is None else out.store(frame, result)

        return invoke


def _converted(fn: _Evaluator, ctype: CType, source: str, start: int) -> _Evaluator:
    """A generic context method's result converted to its type argument (`GetValueOrDefault<int>`); null
    becomes the type's default."""
    if ctype.family == "list" and ctype.element not in (None, DYNAMIC):
        change: Callable[[Any], Any] = lambda value: convert_to(value, ctype)  # noqa: E731
    else:
        change = converter(ctype)
    default = default_of(ctype)

    def convert(frame: Any) -> Any:
        value = fn(frame)
        if value is None:
            return default
        try:
            return change(value)
        except DotNetError as exc:
            raise _runtime_error(source, f"Cannot convert {type_name(value)} to {ctype.name}: {exc.message}", exc.kind, start) from None

    return convert


def _class_member_kinds(name: str) -> set[str]:
    """Whether registered classes declare `name` as a "property" or a "method": what a dynamic value may have."""
    found = (members(ctype.cls).get(name) for ctype in TYPE_NAMES.values() if ctype.family == "class" and ctype.cls)
    return {"property" if member.parameters is None else "method" for member in found if member is not None}
