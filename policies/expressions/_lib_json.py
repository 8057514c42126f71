"""Newtonsoft.Json as policies use it: JObject (dict), JArray (list), JValue (the plain value), JProperty,
`JObject.Parse`, `SelectToken`, `Value<T>`, `ToObject<T>`, `ToString(Formatting.None)` and `JsonConvert`.

A JSON null and a missing member are both null here (Newtonsoft tells a JValue of type Null from a C# null).
"""

from __future__ import annotations

import datetime as _dt
import enum
import re
import uuid
from typing import Any

import orjson

from policies.expressions._errors import DotNetError
from policies.expressions._library import CONSTRUCTORS, enum_type, instance, method, prop, same, static, type_argument
from policies.expressions._limits import sized
from policies.expressions._runtime import converter, default_of, json_text
from policies.expressions._types import BOOL, DYNAMIC, INT, JARRAY, JOBJECT, STRING, VOID, CType, register_class, sequence


class Formatting(enum.Enum):
    None_ = 0
    Indented = 1


class JTokenType(enum.Enum):
    None_ = 0
    Object = 1
    Array = 2
    Integer = 6
    Float = 7
    String = 8
    Boolean = 9
    Null = 10
    Date = 12
    Bytes = 14
    Guid = 15
    TimeSpan = 17


FORMATTING = enum_type(Formatting, ("Formatting", "Newtonsoft.Json.Formatting"))
TOKEN_TYPE = enum_type(JTokenType, ("JTokenType", "Newtonsoft.Json.Linq.JTokenType"))
_TOKEN_TYPES = {dict: JTokenType.Object, list: JTokenType.Array, str: JTokenType.String, bool: JTokenType.Boolean,
                int: JTokenType.Integer, float: JTokenType.Float, _dt.datetime: JTokenType.Date, bytes: JTokenType.Bytes,
                uuid.UUID: JTokenType.Guid, _dt.timedelta: JTokenType.TimeSpan}  # fmt: skip


class JProperty:
    """A name and a value; read from a JObject it stays attached, so `Remove()` takes it out of its object."""

    def __init__(self, name: str, value: Any = None, parent: dict[str, Any] | None = None) -> None:
        self._name, self._value, self._parent = name, value, parent

    @property
    def Name(self) -> str:  # noqa: N802 - Newtonsoft's names
        return self._name

    @property
    def Value(self) -> Any:  # noqa: N802
        return self._parent.get(self._name) if self._parent is not None else self._value

    def Remove(self) -> None:  # noqa: N802
        if self._parent is None:
            raise DotNetError("InvalidOperationException", "The property has no parent.")
        self._parent.pop(self._name, None)
        self._parent = None

    def ToString(self) -> str:  # noqa: N802
        return f'"{self._name}": {json_text(self.Value, indented=True)}'

    def _json(self) -> dict[str, Any]:
        return {self._name: self.Value}


PROPERTY = register_class(JProperty, "JProperty", "Newtonsoft.Json.Linq")
PROPERTIES = sequence(PROPERTY)


def token(value: Any) -> Any:
    """A C# value put into JSON: JSON containers stay themselves, a JProperty becomes a member elsewhere."""
    if isinstance(value, JProperty):
        raise DotNetError("ArgumentException", "Can not add a JProperty as a value; add it to a JObject.")
    return value


def add_property(receiver: dict[str, Any], name: Any, value: Any = None) -> None:
    if isinstance(name, JProperty):
        name, value = name.Name, name.Value
    if type(name) is not str:
        raise DotNetError("ArgumentException", "A JSON property name must be a string.")
    if name in receiver:
        raise DotNetError("ArgumentException", f"Can not add property {name} to JObject. Property with the same name already exists on object.")
    receiver[name] = token(value)
    sized(receiver)


def _new_object(*contents: Any) -> dict[str, Any]:
    """`new JObject()`, `new JObject(new JProperty(…), …)`, `new JObject(otherObject)`."""
    result: dict[str, Any] = {}
    for content in contents:
        for item in content if type(content) is list else [content]:
            if type(item) is dict:
                for name, value in item.items():
                    add_property(result, name, value)
            elif isinstance(item, JProperty):
                add_property(result, item)
            elif item is not None:
                raise DotNetError("ArgumentException", "A JObject can only contain properties.")
    return result


def _new_array(*contents: Any) -> list[Any]:
    """`new JArray()`, `new JArray(a, b)`, `new JArray(enumerable)` (its items)."""
    if len(contents) == 1 and type(contents[0]) is list:
        return list(contents[0])
    return sized([token(item) for item in contents])


def _parse(kind: type | None, what: str) -> Any:
    def parse(textual: Any) -> Any:
        if type(textual) is not str:
            raise DotNetError("ArgumentNullException", f"{what}.Parse needs a string.")
        try:
            value = orjson.loads(textual)
        except orjson.JSONDecodeError as exc:
            raise DotNetError("JsonReaderException", f"Error parsing JSON: {exc}") from None
        if kind is not None and type(value) is not kind:
            raise DotNetError("JsonReaderException", f"Error reading {what} from JsonReader: the JSON is not a {what}.")
        return value

    return parse


def _to_string(receiver: Any, formatting: Any = Formatting.Indented, *converters: Any) -> str:
    return json_text(receiver, indented=formatting is not Formatting.None_)


def _serialize(value: Any, formatting: Any = Formatting.None_) -> str:
    return json_text(value, indented=formatting is Formatting.Indented)


def convert_to(value: Any, T: CType) -> Any:  # noqa: N803 - the type argument
    """`Value<T>()` / `ToObject<T>()`: null gives default(T); a list or dictionary type converts each item."""
    if value is None:
        return default_of(T)
    if T.family == "list" and T.element is not None and T.element is not DYNAMIC:
        if type(value) is not list:
            raise DotNetError("InvalidCastException", f"Cannot convert {type(value).__name__} to {T.name}.")
        item = converter(T.element)
        return [item(v) for v in value]
    return converter(T)(value)


def _value(receiver: Any, key: Any = None, *, T: CType) -> Any:  # noqa: N803
    return convert_to(receiver if key is None else _member(receiver, key), T)


def _member(receiver: Any, key: Any) -> Any:
    if type(receiver) is dict and type(key) is str:
        return receiver.get(key)
    if type(receiver) is list and type(key) is int:
        return receiver[key] if 0 <= key < len(receiver) else None
    raise DotNetError("InvalidOperationException", f"Cannot access child value with key {key!r}.")


def _get_value(receiver: dict[str, Any], name: str, comparison: Any = None) -> Any:
    if comparison is not None and comparison.name.endswith("IgnoreCase"):
        return next((v for k, v in receiver.items() if k.lower() == name.lower()), receiver.get(name))
    return receiver.get(name)


def _property(receiver: dict[str, Any], name: str, comparison: Any = None) -> JProperty | None:
    if comparison is not None and comparison.name.endswith("IgnoreCase"):
        name = next((k for k in receiver if k.lower() == name.lower()), name)
    return JProperty(name, parent=receiver) if name in receiver else None


def _try_get(receiver: dict[str, Any], name: str) -> tuple[bool, Any]:
    return (name in receiver, receiver.get(name))


def deep_clone(value: Any) -> Any:
    """A copy of a JSON tree, made without recursion (a tree may be deeper than Python's stack)."""
    if type(value) not in (dict, list):
        return value
    root: Any = {} if type(value) is dict else []
    pending = [(value, root)]
    while pending:
        source, target = pending.pop()
        pairs = source.items() if type(source) is dict else enumerate(source)
        for key, item in pairs:
            copy = {} if type(item) is dict else [] if type(item) is list else item
            if type(target) is dict:
                target[key] = copy
            else:
                target.append(copy)
            if copy is not item:
                pending.append((item, copy))
    return root


def _merge(receiver: dict[str, Any], other: Any, *settings: Any) -> None:
    if type(other) is dict:
        for name, value in other.items():
            current = receiver.get(name)
            if type(current) is dict and type(value) is dict:
                _merge(current, value)
            else:
                receiver[name] = deep_clone(value)


_PATH = re.compile(r"\$|\.\.|\.([^.\[\]]+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(-?[0-9]+)\s*\]|\[\s*\*\s*\]|\.\*|([^.\[\]]+)")


def select_tokens(receiver: Any, path: str) -> list[Any]:
    """The JSONPath subset SelectToken needs: `$`, `.name`, `['name']`, `[n]`, `[*]`, `.*` and `..name`."""
    current, position, recursive = [receiver], 0, False
    while position < len(path):
        match = _PATH.match(path, position)
        if match is None:
            raise DotNetError("JsonException", f"Unexpected character while parsing path: {path[position]!r}")
        position, step = match.end(), match.group()
        if step == "$":
            continue
        if step == "..":
            recursive = True
            continue
        name = match.group(1) or match.group(2) or match.group(3) or match.group(5)
        candidates = _descendants(current) if recursive else current
        recursive = False
        if name is not None and name != "*":
            current = [c[name] for c in candidates if type(c) is dict and name in c]
        elif match.group(4) is not None:
            index = int(match.group(4))
            current = [c[index] for c in candidates if type(c) is list and -len(c) <= index < len(c)]
        else:
            current = [v for c in candidates for v in (c.values() if type(c) is dict else c if type(c) is list else ())]
    return current


def _descendants(roots: list[Any]) -> list[Any]:
    found, pending = [], list(reversed(roots))
    while pending:
        node = pending.pop()
        found.append(node)
        children = list(node.values()) if type(node) is dict else node if type(node) is list else []
        pending.extend(reversed(children))
    return sized(found)


def _select_token(receiver: Any, path: str, error_when_no_match: bool = False) -> Any:
    matches = select_tokens(receiver, path)
    if len(matches) > 1:
        raise DotNetError("JsonException", "Path returned multiple tokens.")
    if not matches and error_when_no_match:
        raise DotNetError("JsonException", f"Path '{path}' does not exist.")
    return matches[0] if matches else None


def _token_type(receiver: Any) -> JTokenType:
    return _TOKEN_TYPES.get(type(receiver), JTokenType.Null if receiver is None else JTokenType.None_)


def _has_values(receiver: Any) -> bool:
    return type(receiver) in (dict, list) and bool(receiver)


def _children(receiver: Any) -> list[Any]:
    if type(receiver) is dict:
        return [JProperty(name, parent=receiver) for name in receiver]
    return list(receiver) if type(receiver) is list else []


_MISSING = object()
_TOKEN = dict(
    Value=method(_value, type_argument, 0, 1, generic=True),
    ToObject=method(lambda receiver, *, T: convert_to(receiver, T), type_argument, 0, generic=True),
    Type=prop(_token_type, TOKEN_TYPE),
    HasValues=prop(_has_values, BOOL),
    SelectToken=method(_select_token, DYNAMIC, 1, 2, costly=True),
    SelectTokens=method(select_tokens, JARRAY, 1, 2, costly=True),
    DeepClone=method(deep_clone, same, 0, costly=True),
    Children=method(_children, JARRAY, 0),
)
for _family in ("string", "number", "bool", "datetime", "guid", "timespan"):
    instance(_family, **{name: _TOKEN[name] for name in ("Value", "ToObject", "Type", "HasValues")})
instance(
    "dict",
    **_TOKEN,
    ToString=method(_to_string, STRING, 0, None),
    Property=method(_property, PROPERTY, 1, 2),
    Properties=method(lambda receiver: [JProperty(name, parent=receiver) for name in receiver], PROPERTIES, 0),
    GetValue=method(_get_value, DYNAMIC, 1, 2),
    Add=method(add_property, VOID, 1, 2),
    Remove=method(lambda receiver, name: receiver.pop(name, _MISSING) is not _MISSING, BOOL, 1),
    ContainsKey=method(lambda receiver, name: name in receiver, BOOL, 1),
    TryGetValue=method(_try_get, BOOL, 1, out=DYNAMIC),
    Merge=method(_merge, VOID, 1, 2, costly=True),
    Clear=method(dict.clear, VOID, 0),
    Count=prop(len, INT),
    Keys=prop(lambda receiver: list(receiver), sequence(STRING)),
    Values=prop(lambda receiver: list(receiver.values()), JARRAY),
)
instance("list", **_TOKEN, ToString=method(_to_string, STRING, 0, None))
static("JObject", ("Newtonsoft.Json.Linq.JObject",), Parse=method(_parse(dict, "JObject"), JOBJECT, 1), FromObject=method(deep_clone, JOBJECT, 1))
static("JArray", ("Newtonsoft.Json.Linq.JArray",), Parse=method(_parse(list, "JArray"), JARRAY, 1), FromObject=method(deep_clone, JARRAY, 1))
static(
    "JToken",
    ("Newtonsoft.Json.Linq.JToken",),
    Parse=method(_parse(None, "JToken"), DYNAMIC, 1),
    FromObject=method(deep_clone, DYNAMIC, 1),
)
static(
    "JsonConvert",
    ("Newtonsoft.Json.JsonConvert",),
    SerializeObject=method(_serialize, STRING, 1, 2),
    DeserializeObject=method(lambda textual, *, T=DYNAMIC: _parse(None, "JSON")(textual), type_argument, 1, generic=True),
)
CONSTRUCTORS["JObject"] = method(_new_object, JOBJECT, 0, None)
CONSTRUCTORS["JArray"] = method(_new_array, JARRAY, 0, None)
CONSTRUCTORS["JProperty"] = method(
    lambda name, *values: JProperty(name, _new_array(*values) if len(values) > 1 else token(values[0]) if values else None), PROPERTY, 1, None
)
CONSTRUCTORS["JValue"] = method(token, DYNAMIC, 1)
