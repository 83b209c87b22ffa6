"""What plain data is, how a value of the candidate's becomes plain data, and the wire.

Runs in: the sandbox only (both processes of a test step, see ``bridge.py``), and in the
tests of this repository; standard library built-ins only. Plain data is ``None``, ``bool``,
``int``, ``float``, ``complex``, ``str``, ``bytes`` and ``tuple``/``list``/``dict``/``set``/
``frozenset`` of them, each of that *exact* type, and no NaN unless allowed: values whose
comparisons, hashes, truth and text are the interpreter's own code, whoever made them.

:func:`not_plain` is the check that counts: the tests' process runs it on every value it
receives. :func:`to_plain` runs in the candidate's process, where nothing is trusted; it only
spares honest values a failure (a ``namedtuple``, a ``Counter``, an ``IntEnum``, a subclass
that redefines nothing become their builtin base, read with the base type's own methods) and
names what a forged one is (a subclass of ``int`` that redefines ``__eq__``).

Wire format: a marshal of one value, prefixed by its length (8 bytes, big-endian).
"""

import marshal
import posix as os

MAX_MESSAGE_BYTES = 256 * 2**20
SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
CONTAINERS = frozenset({tuple, list, dict, set, frozenset})
# Bases whose subclasses are converted to the base (honest values such as a namedtuple or a
# Counter), most specific first.
BASES = (int, float, complex, str, bytes, tuple, list, dict, set, frozenset)
# Redefining one of these changes what a comparison, a truth test, a lookup or a text sees.
VALUE_METHODS = frozenset((
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__",
    "__len__", "__iter__", "__reversed__", "__contains__", "__getitem__", "__getattr__",
    "__getattribute__", "__str__", "__repr__", "__format__", "__int__", "__float__",
    "__complex__", "__index__", "__abs__", "__round__", "__trunc__", "__floor__", "__ceil__",
    "__neg__", "__pos__", "__invert__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
    "__rmul__", "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__",
    "__rmod__", "__divmod__", "__rdivmod__", "__pow__", "__rpow__", "__and__", "__rand__",
    "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__", "__rshift__",
))  # fmt: skip
HONEST_MODULES = ("collections", "enum")  # Counter, OrderedDict, defaultdict, IntEnum...


# -- the wire ---------------------------------------------------------------------------------


def send(fd, message):
    data = marshal.dumps(message)
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _read(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd):
    """The next message, or None at end of file. Raises ValueError on a malformed one."""
    head = _read(fd, 8)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {size} bytes (over {MAX_MESSAGE_BYTES})")
    body = _read(fd, size)
    if body is None:
        return None
    return marshal.loads(body)


def not_plain(value, allow_nan):
    """Why ``value`` is not plain data (a short description), or None when it is.

    Iterative, and each container is visited once: shared and cyclic structures (marshal
    rebuilds both) cost their size, not their number of paths.
    """
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item != item and not allow_nan:
                return "NaN"
        elif kind is complex:
            if item != item and not allow_nan:
                return "a complex NaN"
        elif kind in SCALARS:
            continue
        elif kind in CONTAINERS:
            if id(item) in seen:
                continue
            seen.add(id(item))
            if kind is dict:
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            return "a value of type " + kind.__name__
    return None


class NotPlain(Exception):
    """A value of the candidate's that cannot cross: its message says what it is."""


def _redefined(kind, base):
    """Value methods ``kind`` (a subclass of ``base``) redefines, except in honest library
    classes (collections, enum, namedtuple)."""
    found = []
    for cls in kind.__mro__:
        if cls is base:
            break
        if cls.__module__ in HONEST_MODULES or type(cls).__module__ == "enum":
            continue
        if "_fields" in cls.__dict__ and "_make" in cls.__dict__:  # a namedtuple
            continue
        found.extend(sorted(VALUE_METHODS.intersection(cls.__dict__)))
    return found


def _convert(value, allow_nan, memo):
    """``value`` as plain data; raises NotPlain. Subclasses of builtin types that redefine
    none of the value methods become their base type, read with the base type's own methods."""
    kind = type(value)
    if kind in SCALARS or kind in CONTAINERS or kind is bytearray:
        base = kind
    else:
        base = next((b for b in BASES if issubclass(kind, b)), None)
        if base is None:
            if isinstance(value, type):
                raise NotPlain(f"the class {value.__name__!s:.100} (of metaclass {kind.__name__})")
            raise NotPlain(f"an object of class {kind.__name__}")
        lying = _redefined(kind, base)
        if lying:
            raise NotPlain(
                f"an object of class {kind.__name__}, a subclass of {base.__name__} that "
                f"redefines {', '.join(lying[:4])}"
            )
    if base in (float, complex) and value != value and not allow_nan:
        raise NotPlain("NaN")
    if base in (int, float, complex, str, bytes):
        return base.__dict__["__" + base.__name__ + "__"](value)  # e.g. int.__int__: exact
    if base is bytearray:
        return bytes(value)
    if id(value) in memo:
        done = memo[id(value)]
        if done is None:
            raise NotPlain(f"a {kind.__name__} that contains itself")
        return done
    if base is list:
        memo[id(value)] = out = []
        out.extend(_convert(x, allow_nan, memo) for x in list.__iter__(value))
        return out
    if base is dict:
        memo[id(value)] = out = {}
        for key, item in list(dict.items(value)):
            out[_convert(key, allow_nan, memo)] = _convert(item, allow_nan, memo)
        return out
    memo[id(value)] = None  # tuples, sets: immutable, so a cycle through them cannot be kept
    items = [_convert(x, allow_nan, memo) for x in base.__iter__(value)]
    memo[id(value)] = out = base(items)
    return out


def to_plain(value, allow_nan):
    if not_plain(value, allow_nan) is None:
        return value  # already plain (the common case): no copy
    return _convert(value, allow_nan, {})
