"""System basics: Convert, Encoding, BitConverter, Math, number and bool parsing, Guid, Random, exceptions."""

from __future__ import annotations

import base64
import binascii
import decimal
import enum
import math
import random
import uuid
from collections.abc import Callable
from typing import Any

from policies.expressions._errors import DotNetError
from policies.expressions._format import DECIMALS, format_guid, format_number
from policies.expressions._library import CONSTRUCTORS, constant, enum_type, instance, method, prop, static, type_argument
from policies.expressions._limits import sized
from policies.expressions._runtime import converter, in_range, parse_bool, parse_double, parse_integer, text
from policies.expressions._types import BOOL, BYTES, DOUBLE, GUID, INT, LONG, NUMBERS, STRING, CType, join, register_class, register_type


def _try(parse: Any) -> Any:
    def attempt(value: Any, *ignored: Any) -> tuple[bool, Any]:
        try:
            return True, parse(value)
        except DotNetError:
            return False, None

    return attempt


def _parse_text(parse: Any) -> Any:
    def checked(value: Any, *ignored: Any) -> Any:
        if type(value) is not str:
            raise DotNetError("ArgumentNullException", "Value cannot be null.")
        return parse(value)

    return checked


def _number_statics(ctype: CType, parse: Any, low: Any, high: Any) -> dict[str, Any]:
    return dict(
        Parse=method(_parse_text(parse), ctype, 1),
        TryParse=method(_try(_parse_text(parse)), BOOL, 1, out=ctype),
        MaxValue=constant(high, ctype),
        MinValue=constant(low, ctype),
    )


static("Int32", ("int", "System.Int32"), **_number_statics(INT, lambda s: parse_integer(s, INT), -(1 << 31), (1 << 31) - 1))
static("Int64", ("long", "System.Int64"), **_number_statics(LONG, lambda s: parse_integer(s, LONG), -(1 << 63), (1 << 63) - 1))
static(
    "Double",
    ("double", "System.Double", "decimal", "Decimal", "float", "Single"),
    **_number_statics(DOUBLE, parse_double, -1.7976931348623157e308, 1.7976931348623157e308),
    NaN=constant(math.nan, DOUBLE),
    PositiveInfinity=constant(math.inf, DOUBLE),
    NegativeInfinity=constant(-math.inf, DOUBLE),
    Epsilon=constant(5e-324, DOUBLE),
    IsNaN=method(math.isnan, BOOL, 1),
    IsInfinity=method(math.isinf, BOOL, 1),
)
static(
    "Boolean",
    ("bool", "System.Boolean"),
    Parse=method(_parse_text(parse_bool), BOOL, 1),
    TryParse=method(_try(_parse_text(parse_bool)), BOOL, 1, out=BOOL),
    TrueString=constant("True", STRING),
    FalseString=constant("False", STRING),
)
instance("number", ToString=method(format_number, STRING, 0, 1), CompareTo=method(lambda a, b: (a > b) - (a < b), INT, 1))
instance("bool", ToString=method(text, STRING, 0), CompareTo=method(lambda a, b: (a > b) - (a < b), INT, 1))
instance("enum", ToString=method(text, STRING, 0), HasFlag=method(lambda a, b: (a & b) == b, BOOL, 1))


def _to_integer(ctype: CType) -> Callable[..., int]:
    def convert(value: Any, base: int | None = None) -> int:
        """Convert.ToInt32/64: null is 0, doubles round to even, text parses (in `base` 2, 8, 10 or 16)."""
        if value is None:
            return 0
        if type(value) is bool:
            return int(value)
        if type(value) is float:
            if not math.isfinite(value):
                raise DotNetError("OverflowException", f"Value was either too large or too small for {ctype.name}.")
            return in_range(round(value), ctype)
        if type(value) is str and base not in (None, 10):
            try:
                return in_range(int(value.strip(), base or 10), ctype)
            except (TypeError, ValueError):
                raise DotNetError("FormatException", "Could not find any recognizable digits.") from None
        number: int = converter(ctype)(value)
        return number

    return convert


def _to_double(value: Any) -> float:
    if value is None:
        return 0.0
    return float(value) if type(value) is bool else converter(DOUBLE)(value)


def _to_boolean(value: Any) -> bool:
    if value is None:
        return False
    truth: bool = value != 0 if type(value) in (int, float) else converter(BOOL)(value)
    return truth


def _to_string(value: Any, base: Any = None) -> str:
    if type(value) is int and type(base) is int:
        digits = {2: "b", 8: "o", 10: "d", 16: "x"}.get(base)
        if digits is None:
            raise DotNetError("ArgumentException", "Invalid Base.")
        return format(value & 0xFFFFFFFF if value < 0 else value, digits)
    return text(value)


def _bytes(value: Any, name: str = "inArray") -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is list and all(type(b) is int and 0 <= b <= 255 for b in value):
        return bytes(value)
    raise DotNetError("ArgumentNullException" if value is None else "ArgumentException", f"'{name}' must be a byte array.")


def _to_base64(value: Any, offset: int = 0, length: int | None = None, *options: Any) -> str:
    data = _bytes(value)
    return sized(base64.b64encode(data[offset : None if length is None else offset + length]).decode())


def _from_base64(value: Any) -> bytes:
    compact = "".join(str(value).split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise DotNetError("FormatException", "The input is not a valid Base-64 string.") from None


def _from_hex(value: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DotNetError("FormatException", "The input is not a valid hex string.") from None


static(
    "Convert",
    ("System.Convert",),
    ToBase64String=method(_to_base64, STRING, 1, 4, costly=True),
    FromBase64String=method(_from_base64, BYTES, 1, costly=True),
    ToHexString=method(lambda data: _bytes(data).hex().upper(), STRING, 1, costly=True),
    FromHexString=method(_from_hex, BYTES, 1, costly=True),
    ToInt32=method(_to_integer(INT), INT, 1, 2),
    ToInt64=method(_to_integer(LONG), LONG, 1, 2),
    ToDouble=method(_to_double, DOUBLE, 1),
    ToDecimal=method(_to_double, DOUBLE, 1),
    ToBoolean=method(_to_boolean, BOOL, 1),
    ToString=method(_to_string, STRING, 1, 2),
)


class Encoding:
    """`Encoding.UTF8`, `.ASCII`, `.Unicode` (UTF-16 LE): text to bytes and back; undecodable bytes become U+FFFD."""

    def __init__(self, codec: str, name: str) -> None:
        self._codec, self._name = codec, name

    def GetBytes(self, value: Any) -> bytes:  # noqa: N802 - .NET's names
        textual = "".join(value) if type(value) is list else value
        if type(textual) is not str:
            raise DotNetError("ArgumentNullException", "String reference not set to an instance of a String.")
        return sized(textual.encode(self._codec, "replace"))

    def GetString(self, data: bytes, index: int = 0, count: int | None = None) -> str:  # noqa: N802
        chunk = _bytes(data, "bytes")[index : None if count is None else index + count]
        return chunk.decode(self._codec, "replace")

    def GetByteCount(self, value: str) -> int:  # noqa: N802
        return len(self.GetBytes(value))

    @property
    def WebName(self) -> str:  # noqa: N802
        return self._name


ENCODING = register_class(Encoding, "Encoding", "System.Text")
static(
    "Encoding",
    ("System.Text.Encoding",),
    UTF8=constant(Encoding("utf-8", "utf-8"), ENCODING),
    ASCII=constant(Encoding("ascii", "us-ascii"), ENCODING),
    Unicode=constant(Encoding("utf-16-le", "utf-16"), ENCODING),
    UTF32=constant(Encoding("utf-32-le", "utf-32"), ENCODING),
    Default=constant(Encoding("utf-8", "utf-8"), ENCODING),
)
instance("bytes", Length=prop(len, INT), ToString=method(text, STRING, 0))


def _bit_string(data: Any, start: int = 0, length: int | None = None) -> str:
    chunk = _bytes(data, "value")[start : None if length is None else start + length]
    return sized("-".join(f"{b:02X}" for b in chunk))


static("BitConverter", ("System.BitConverter",), ToString=method(_bit_string, STRING, 1, 3, costly=True))


def _numbers(receiver: CType, arguments: list[CType], type_arg: CType | None) -> CType:
    """Math.Min/Max/Abs/Clamp keep their arguments' numeric type."""
    result = arguments[0] if arguments else DOUBLE
    for argument in arguments[1:]:
        result = join(result, argument)
    return result if result in NUMBERS else DOUBLE


def _number(value: Any) -> Any:
    if type(value) not in (int, float):
        raise DotNetError("ArgumentException", "A number is required.")
    return value


class MidpointRounding(enum.Enum):
    ToEven = 0
    AwayFromZero = 1


enum_type(MidpointRounding, ("MidpointRounding", "System.MidpointRounding"))


def _round(value: Any, *options: Any) -> Any:
    """Math.Round: to even by default (as .NET), away from zero with MidpointRounding.AwayFromZero."""
    digits = next((o for o in options if type(o) is int), 0)
    if not 0 <= digits <= 15:
        raise DotNetError("ArgumentOutOfRangeException", "Rounding digits must be between 0 and 15, inclusive.")
    away = MidpointRounding.AwayFromZero in options
    if not away:
        return float(round(_number(value), digits))
    exact = decimal.Decimal(repr(float(value))).quantize(decimal.Decimal(1).scaleb(-digits), context=DECIMALS)
    return float(exact)


def _log(value: Any, base: Any = None) -> float:
    try:
        return math.log(value) if base is None else math.log(value, base)
    except ValueError:
        return math.nan if value < 0 else -math.inf


def _clamp(value: Any, low: Any, high: Any) -> Any:
    if low > high:
        raise DotNetError("ArgumentException", "min must be less than or equal to max.")
    return min(max(_number(value), low), high)


def _power(base: Any, exponent: Any) -> float:
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan


static(
    "Math",
    ("System.Math",),
    Min=method(lambda a, b: min(_number(a), _number(b)), _numbers, 2),
    Max=method(lambda a, b: max(_number(a), _number(b)), _numbers, 2),
    Abs=method(lambda a: abs(_number(a)), _numbers, 1),
    Clamp=method(_clamp, _numbers, 3),
    Sign=method(lambda a: (a > 0) - (a < 0), INT, 1),
    Round=method(_round, DOUBLE, 1, 3),
    Floor=method(lambda a: float(math.floor(a)), DOUBLE, 1),
    Ceiling=method(lambda a: float(math.ceil(a)), DOUBLE, 1),
    Truncate=method(lambda a: float(math.trunc(a)), DOUBLE, 1),
    Pow=method(_power, DOUBLE, 2),
    Sqrt=method(lambda a: math.sqrt(a) if a >= 0 else math.nan, DOUBLE, 1),
    Log=method(_log, DOUBLE, 1, 2),
    Log10=method(lambda a: _log(a, 10), DOUBLE, 1),
    Exp=method(lambda a: _power(math.e, a), DOUBLE, 1),
    PI=constant(math.pi, DOUBLE),
    E=constant(math.e, DOUBLE),
)


def _parse_guid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise DotNetError("FormatException", "Unrecognized Guid format.") from None


static(
    "Guid",
    ("System.Guid",),
    NewGuid=method(uuid.uuid4, GUID, 0),
    Empty=constant(uuid.UUID(int=0), GUID),
    Parse=method(_parse_guid, GUID, 1),
    TryParse=method(_try(_parse_guid), BOOL, 1, out=GUID),
)
instance("guid", ToString=method(format_guid, STRING, 0, 1), ToByteArray=method(lambda g: g.bytes_le, BYTES, 0))
CONSTRUCTORS["Guid"] = method(_parse_guid, GUID, 1)


class Random:
    """`new Random()`: not cryptographic, as in .NET."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def Next(self, first: int | None = None, second: int | None = None) -> int:  # noqa: N802 - .NET's names
        low, high = (0, first) if second is None else (first, second)
        if high is None:
            high = (1 << 31) - 1
        if low is None or high < low or high < 0:
            raise DotNetError("ArgumentOutOfRangeException", "'minValue' cannot be greater than maxValue.")
        return low if high == low else self._random.randrange(low, high)

    def NextDouble(self) -> float:  # noqa: N802
        return self._random.random()


register_class(Random, "Random", "System")
CONSTRUCTORS["Random"] = method(Random, type_argument, 0, 1)


class Exception_:
    """An exception a block creates with `new Exception("…")` and throws, or catches as `catch (Exception ex)`."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        self._kind, self._message = kind, message

    @property
    def Message(self) -> str:  # noqa: N802
        return self._message if self._message is not None else f"Exception of type 'System.{self._kind}' was thrown."

    @property
    def kind(self) -> str:
        return self._kind

    def ToString(self) -> str:  # noqa: N802
        return f"System.{self._kind}: {self.Message}"


EXCEPTION = register_class(Exception_, "Exception", "System")
#: .NET exception types a block may create or catch, each with its base type.
EXCEPTION_BASES = {
    "Exception": None, "SystemException": "Exception", "ArgumentException": "SystemException",
    "ArgumentNullException": "ArgumentException", "ArgumentOutOfRangeException": "ArgumentException",
    "FormatException": "SystemException", "InvalidOperationException": "SystemException",
    "InvalidCastException": "SystemException", "NullReferenceException": "SystemException",
    "KeyNotFoundException": "SystemException", "IndexOutOfRangeException": "SystemException",
    "OverflowException": "ArithmeticException", "ArithmeticException": "SystemException",
    "DivideByZeroException": "ArithmeticException", "NotSupportedException": "SystemException",
    "JsonException": "Exception", "JsonReaderException": "JsonException", "JsonSerializationException": "JsonException",
    "RegexMatchTimeoutException": "TimeoutException", "TimeoutException": "SystemException",
    "UriFormatException": "FormatException",
}  # fmt: skip
for _kind in EXCEPTION_BASES:
    register_type(EXCEPTION, _kind, f"System.{_kind}")
    CONSTRUCTORS[_kind] = method(lambda message=None, inner=None, kind=_kind: Exception_(kind, message), EXCEPTION, 0, 2)


def catches(handler: str, kind: str) -> bool:
    """Whether `catch (handler)` catches an exception of type `kind` (its own type or a base type)."""
    current: str | None = kind
    while current is not None:
        if current == handler:
            return True
        current = EXCEPTION_BASES.get(current, "Exception" if current != "Exception" else None)
    return False
