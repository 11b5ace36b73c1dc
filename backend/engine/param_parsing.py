"""Total parsers for values that arrive from clients and config files (JSON, or strings as Triton
request parameters arrive): each returns a valid Python value or raises a `ValueError` whose message
starts with the field's name. No other exception type escapes, whatever the input: huge integers,
NaN and infinities, deep nesting, megabytes of text.
"""

from __future__ import annotations

import json
import math
import reprlib

# Integers the engine stores (counts, lengths, steps) fit in a signed 32-bit int; seeds in an int64.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
# Longest integer literal we read (Python itself refuses to convert more than 4300 digits, and
# nothing we take needs more than 19).
MAX_INT_DIGITS = 32
# Containers nested deeper than this are refused (sampling parameters hold scalars and one list).
MAX_JSON_DEPTH = 8

_show = reprlib.Repr()
_show.maxstring = _show.maxother = 60
_show.maxlist = _show.maxdict = 4
_show.maxlevel = 2


class LongInteger:
    """An integer literal too long to convert, kept as its digit count so that the field it was
    given for can refuse it by name (Python refuses to convert more than 4300 digits)."""

    def __init__(self, literal: str):
        self.digits = len(literal.lstrip("+-"))

    def __repr__(self) -> str:
        return f"<integer of {self.digits} digits>"


def _json_int(literal: str):
    return LongInteger(literal) if len(literal.lstrip("+-")) > MAX_INT_DIGITS else int(literal)


def loads(text: str):
    """json.loads, with integer literals longer than MAX_INT_DIGITS read as LongInteger."""
    return json.loads(text, parse_int=_json_int)


def show(value) -> str:
    """A short, safe rendering of a client's value for an error message (never megabytes, never a
    RecursionError on deep nesting)."""
    try:
        return _show.repr(value)
    except Exception:  # a value whose repr fails must not replace the real error
        return f"<{type(value).__name__}>"


def parse_bool(name: str, v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"{name}: expected a boolean, got {show(v)}")


def parse_int(name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (also from an integral float or a decimal string), in [lo, hi] when given."""
    out = None
    if isinstance(v, LongInteger):
        raise ValueError(f"{name}: integer of {v.digits} digits is out of range")
    if isinstance(v, bool):
        pass
    elif isinstance(v, int):
        out = v
    elif isinstance(v, float) and math.isfinite(v) and v.is_integer():
        out = int(v)
    elif isinstance(v, str):
        text = v.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if 0 < len(digits) <= MAX_INT_DIGITS and digits.isascii() and digits.isdigit():
            out = int(text)
        elif len(digits) > MAX_INT_DIGITS and digits.isascii() and digits.isdigit():
            raise ValueError(f"{name}: integer of {len(digits)} digits is out of range")
    if out is None:
        raise ValueError(f"{name}: expected an integer, got {show(v)}")
    _check_range(name, out, lo, hi)
    return out


def parse_float(name: str, v, lo: float | None = None, hi: float | None = None) -> float:
    """A finite number (also from a decimal string), in [lo, hi] when given."""
    out = None
    if isinstance(v, LongInteger):
        raise ValueError(f"{name}: number of {v.digits} digits is out of range")
    if isinstance(v, bool):
        pass
    elif isinstance(v, (int, float)):
        try:
            out = float(v)
        except OverflowError:  # an integer beyond the float range
            raise ValueError(f"{name}: number is out of range") from None
    elif isinstance(v, str) and len(v) <= 64:
        try:
            out = float(v.strip())
        except ValueError:
            pass
    if out is None:
        raise ValueError(f"{name}: expected a number, got {show(v)}")
    if not math.isfinite(out):
        raise ValueError(f"{name}: must be a finite number, got {show(v)}")
    _check_range(name, out, lo, hi)
    return out


def parse_str(name: str, v, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str):
        raise ValueError(f"{name}: expected a string, got {show(v)}")
    if choices is not None and v not in choices:
        raise ValueError(f"{name}: must be one of {choices}, got {show(v)}")
    return v


def parse_stop(name: str, v, max_count: int, max_chars: int) -> list[str]:
    """Stop strings: one string, a list of strings, or a JSON list in a string (as Triton request
    parameters arrive). At most `max_count` strings of 1 to `max_chars` characters."""
    # The longest JSON text a valid list can take: every character escaped as \uXXXX.
    if isinstance(v, str) and v.lstrip().startswith("[") and len(v) <= max_count * (6 * max_chars + 4) + 2:
        try:  # a JSON list passed as a string
            parsed = loads(v)
        except (ValueError, RecursionError):
            parsed = None
        v = parsed if isinstance(parsed, list) else [v]
    elif isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise ValueError(f"{name}: expected a string or a list of non-empty strings, got {show(v)}")
    if len(v) > max_count:
        raise ValueError(f"{name}: at most {max_count} stop strings, got {len(v)}")
    longest = max((len(s) for s in v), default=0)
    if longest > max_chars:
        raise ValueError(f"{name}: a stop string may hold at most {max_chars} characters, got {longest}")
    return list(v)


def parse_json_object(name: str, text: str, max_chars: int) -> dict:
    """A JSON object from `text` (empty text: {}). Too long, malformed, nested deeper than
    MAX_JSON_DEPTH, or not an object: a ValueError naming `name`."""
    if len(text) > max_chars:
        raise ValueError(f"{name}: {len(text)} characters exceed the limit of {max_chars}")
    if not text.strip():
        return {}
    try:
        value = loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON ({e.msg} at position {e.pos})") from None
    except RecursionError:
        raise ValueError(f"{name}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # not expected (long integers are read as LongInteger); still named
        raise ValueError(f"{name}: not valid JSON ({show(str(e))})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"{name}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            d += 1
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                break
            stack.extend((x, d) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _check_range(name: str, v, lo, hi) -> None:
    if lo is not None and v < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {show(v)}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {show(v)}")


def parse_neutral_only(name: str, v, neutral: float, why: str) -> float:
    """A number that must be `neutral` (vLLM's keys this engine cannot honour): accepted there, so that
    a client sending the neutral value works unchanged; refused by name, with `why`, anywhere else.
    Never ignored: an ignored penalty would silently answer a different question."""
    v = parse_float(name, v)
    if v != neutral:
        raise ValueError(f"{name}: only {show(neutral)} (no penalty) is supported, got {show(v)}: {why}")
    return v
