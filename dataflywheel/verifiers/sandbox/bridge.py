"""What crosses between a test step's two processes: plain data, never the candidate's objects.

Runs in: the sandbox only, on both sides of a test step (``harness.py`` forks them): the
*candidate's process* runs the candidate program and answers calls (:func:`serve`); the
*tests' process* runs the tests, never candidate code, and reaches the candidate only through
:class:`Link`. Standard library built-ins only (nothing else is visible in the sandbox).

Why two processes: a candidate sharing the tests' process can rewrite whatever decides the
verdict (frames, globals, builtins, the harness's report, the interpreter's memory), so no
check made in that process holds. Here every value the tests see is *plain data* decoded in
the tests' process: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``
and ``tuple``/``list``/``dict``/``set``/``frozenset`` of them, by exact type (no subclass),
without NaN unless allowed. A comparison in the tests therefore runs builtin code on values the
candidate chose but cannot make lie. Everything the candidate's process says is checked here,
on the receiving side; what it checks itself (converting an honest ``namedtuple`` or
``Counter`` to its plain value, naming the class of a forged value) only makes its messages
clearer.

Besides plain data, three things cross, all built by the tests' process itself:

* the candidate's exceptions, as a builtin exception class (or a stand-in for one of the
  candidate's own exception classes) with the message text; ``StopIteration`` becomes a
  ``RuntimeError`` (it would silently end the tests' loops), ``SystemExit`` and other
  ``BaseException``\\ s end the step as ``exit``;
* references to objects the tests create by calling one of the candidate's classes
  (:class:`Remote`): attributes can be read and set and methods called, and nothing else, since
  comparing one, testing its truth or turning it into text would ask the candidate's own code
  about its value (``forged_value``); calls of the prompt's entry point never return one;
* the new contents of the ``list``, ``dict`` and ``set`` arguments a call mutated in place.

Messages are tuples on two pipes (``plain.send``/``plain.receive``). A reference travels as
``(Ellipsis, id)``; Ellipsis is not plain data, so no plain value is ever mistaken for one.
"""

import _thread
import builtins
import sys

from dataflywheel.verifiers.sandbox.plain import BASES, NotPlain, not_plain, receive, send, to_plain

MAX_TEXT = 2000
NOT_CAUGHT_BY_TESTS = frozenset({"StopIteration", "StopAsyncIteration"})


def _text(exc):
    try:
        return str(exc)[:MAX_TEXT]
    except BaseException:  # a hostile __str__
        return ""


def _raised(exc):
    """The reply for an exception of the candidate's."""
    names = tuple(str(cls.__name__) for cls in type(exc).__mro__)
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt, GeneratorExit
        return ("exit", names[0], _text(exc))
    return ("raise", names, _text(exc))


class _Objects:
    """The candidate's objects the tests hold references to, by a small id."""

    def __init__(self):
        self.by_id, self.ids = {}, {}

    def add(self, value):
        key = id(value)
        if key not in self.ids:
            self.ids[key] = len(self.by_id) + 1
            self.by_id[self.ids[key]] = value  # kept alive, so id(value) stays unique
        return self.ids[key]

    def reply(self, value, allow_nan, objects_ok):
        """("value", plain, ()); a reference to an object, when one may cross here; else
        ("forged", what the value is). A value of a builtin type never crosses as an object."""
        try:
            return ("value", to_plain(value, allow_nan), ())
        except NotPlain as exc:
            if not objects_ok or issubclass(type(value), BASES):
                return ("forged", f"returned {exc}")
        kind = "class" if isinstance(value, type) else "function" if callable(value) else "object"
        return (kind, self.add(value), str(type(value).__name__))


def _describe_names(namespace, objects, allow_nan):
    """What the tests' process needs to bind each of the candidate's global names."""
    names = []
    for name, value in list(namespace.items()):
        if type(name) is not str or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(value, type(sys)):
            names.append((name, "module", str(value.__name__)))
        elif isinstance(value, type) and issubclass(value, Exception):
            names.append((name, "exception", tuple(str(c.__name__) for c in value.__mro__)))
        else:
            reply = objects.reply(value, allow_nan, objects_ok=True)
            if reply[0] != "forged":
                names.append((name, reply[0], reply[1]))
    return tuple(names)


def _flush():
    for stream in (sys.stdout, sys.stderr):  # what the candidate printed, before it is killed
        try:  # noqa: SIM105 - contextlib would cost start-up time in every sandbox
            stream.flush()
        except BaseException:
            pass


def serve(code, tampered, requests, replies, allow_nan):
    """The candidate's process: run the program, send its names, then answer the tests'
    requests until they close the pipe. ``tampered()`` names what the candidate rebound in
    the modules it shares with the tests: a label only, since the tests run elsewhere."""
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    objects = _Objects()
    try:
        exec(code, namespace)
        reply = ("names", _describe_names(namespace, objects, allow_nan))
    except BaseException as exc:
        reply = _raised(exc)
    changed = tampered()
    if changed:
        reply = ("tampered", tuple(changed))
    _reply(replies, reply)
    if reply[0] != "names":
        return  # the program itself failed: the tests' process ends the step
    while True:
        request = receive(requests)
        if request is None:
            return
        try:
            reply = _answer(request, objects, tampered, allow_nan)
        except BaseException as exc:
            reply = _raised(exc)
        _reply(replies, reply)


def _reply(replies, reply):
    _flush()
    try:
        send(replies, reply)
    except ValueError:  # marshal: nested too deeply to write
        send(replies, ("forged", "returned a value nested too deeply to send"))


def _resolve(value, objects):
    if type(value) is tuple and len(value) == 2 and value[0] is Ellipsis:
        return objects.by_id[value[1]]
    return value


def _answer(request, objects, tampered, allow_nan):
    """One request: ("call", ref, args, kwargs, positions of list/dict/set arguments,
    objects_ok), ("getattr", ref, name), ("setattr", ref, name, value) or ("end", 0)."""
    op = request[0]
    if op == "end":
        changed = tampered()
        return ("tampered", tuple(changed)) if changed else ("value", None, ())
    target = objects.by_id[request[1]]
    if op == "getattr":
        return objects.reply(getattr(target, request[2]), allow_nan, objects_ok=True)
    if op == "setattr":
        setattr(target, request[2], _resolve(request[3], objects))
        return ("value", None, ())
    args = tuple(_resolve(a, objects) for a in request[2])
    kwargs = {k: _resolve(v, objects) for k, v in request[3].items()}
    reply = objects.reply(target(*args, **kwargs), allow_nan, objects_ok=request[5])
    if reply[0] == "value" and request[4]:
        try:
            changed = tuple(to_plain(args[i], True) for i in request[4])
        except NotPlain as exc:
            return ("forged", f"changed an argument into {exc}")
        reply = ("value", reply[1], changed)
    return reply


# -- the tests' process -----------------------------------------------------------------------


class Link:
    """The tests' end of a step: it sends requests and checks every reply before the tests see
    any of it. ``fail(error_class, message)`` ends the step at once and never returns, so that
    the tests' own ``try`` cannot catch a forged value."""

    def __init__(self, requests, replies, fail, allow_nan, entry_point):
        self.requests, self.replies, self.fail = requests, replies, fail
        self.allow_nan, self.entry_point = allow_nan, entry_point
        self.remotes, self.mirrors = {}, {}
        self.lock = _thread.allocate_lock()  # tests may call the candidate from threads

    # replies

    def _check(self, reply, gone):
        """``reply`` if well formed; ends the step on the replies that end it."""
        if reply is None:
            self.fail("gone", gone)
        if type(reply) is not tuple or not reply or type(reply[0]) is not str:
            self.fail("crash", "the candidate's process sent a malformed message")
        tag = reply[0]
        if tag == "forged":
            self.fail("forged_value", f"the candidate {self._text(reply, 1)}, which is not "
                      "plain data: only exact builtin values cross to the tests (NaN only with "
                      "the sandbox's allow_nan)")  # fmt: skip
        if tag == "exit":
            self.fail("exit", f"{self._text(reply, 1)}: {self._text(reply, 2)}")
        if tag == "tampered":
            names = reply[1] if len(reply) > 1 and type(reply[1]) is tuple else ()
            text = ", ".join(n[:200] for n in names[:10] if type(n) is str)
            self.fail("tampering", "modified shared state: " + text)
        return reply

    def _text(self, reply, index):
        value = reply[index] if len(reply) > index else None
        if type(value) is not str:
            self.fail("crash", "the candidate's process sent a malformed message")
        return value[:MAX_TEXT]

    def _ask(self, request):
        with self.lock:
            try:
                send(self.requests, request)
                reply = receive(self.replies)
            except OSError:
                reply = None
            except Exception as exc:  # whatever the candidate wrote: nothing of it is trusted
                self.fail(
                    "crash", f"the candidate's process sent an unreadable reply ({exc!r:.200})"
                )
            return self._check(reply, "the candidate's process ended during a call")

    def _plain(self, value, what):
        why = not_plain(value, self.allow_nan)
        if why is not None:
            self.fail("forged_value", f"the candidate {what} {why}, which is not plain data: "
                      "only exact builtin values cross to the tests (NaN only with the sandbox's "
                      "allow_nan)")  # fmt: skip
        return value

    def _value(self, reply, objects_ok):
        tag = reply[0]
        if tag == "value" and len(reply) == 3:
            return self._plain(reply[1], "returned")
        if tag in ("class", "function", "object") and len(reply) == 3:
            if not objects_ok:
                self.fail("forged_value", f"the candidate returned an object of class "
                          f"{self._text(reply, 2)}; its functions return plain data only (exact "
                          "builtin values)")  # fmt: skip
            if type(reply[1]) is not int:
                self.fail("crash", "the candidate's process sent a malformed reference")
            return self.remote(reply[1], tag, self._text(reply, 2))
        if tag == "raise" and len(reply) == 3:
            raise self._exception(reply[1], self._text(reply, 2))
        self.fail("crash", f"the candidate's process sent an unexpected reply ({tag[:40]!r})")

    def _exception(self, names, message):
        """The tests' own exception for one the candidate raised: its nearest builtin class
        (or the stand-in for the candidate's class) with the message text."""
        if type(names) is not tuple or not names or any(type(n) is not str for n in names):
            self.fail("crash", "the candidate's process sent a malformed exception")
        if names[0] in NOT_CAUGHT_BY_TESTS:  # would end the tests' loops (map, zip) silently
            return RuntimeError(f"the candidate raised {names[0]}: {message}")
        for cls in [self.mirrors.get(names[0])] + [getattr(builtins, n, None) for n in names]:
            if (type(cls) is type and issubclass(cls, Exception)
                    and cls.__name__ not in NOT_CAUGHT_BY_TESTS):  # fmt: skip
                try:
                    return cls(message)
                except Exception:  # e.g. UnicodeDecodeError wants five arguments
                    continue
        return RuntimeError(f"{names[0]}: {message}")

    # requests

    def _export(self, value):
        if type(value) is Remote:
            return (Ellipsis, _slot(value, "ref"))
        why = not_plain(value, True)
        if why is not None:
            self.fail("tests_unsupported", f"the tests pass {why} to the candidate; only plain "
                      "data and the candidate's own objects cross to its process")  # fmt: skip
        return value

    def remote(self, ref, kind, type_name):
        # By kind too: an alias of the entry point must not lend it a class's rights.
        if (ref, kind) not in self.remotes:
            self.remotes[ref, kind] = Remote(self, ref, kind, type_name)
        return self.remotes[ref, kind]

    def call(self, ref, kind, args, kwargs):
        objects_ok = kind == "class"  # a new object; functions and methods: plain data
        positions = tuple(i for i, a in enumerate(args) if type(a) in (list, dict, set))
        request = ("call", ref, tuple(self._export(a) for a in args),
                   {k: self._export(v) for k, v in kwargs.items()}, positions,
                   objects_ok)  # fmt: skip
        reply = self._ask(request)
        result = self._value(reply, objects_ok)
        if positions and reply[0] == "value":
            self._sync([args[i] for i in positions], reply[2])
        return result

    def _sync(self, originals, changed):
        """Change the tests' list/dict/set arguments in place as the candidate changed its
        copies (a function that sorts its argument in place)."""
        if type(changed) is not tuple or len(changed) != len(originals):
            self.fail("crash", "the candidate's process sent a malformed reply")
        self._plain(changed, "changed an argument into")
        for original, new in zip(originals, changed, strict=True):
            if type(new) is not type(original):
                self.fail("forged_value", "the candidate changed the type of an argument")
            if type(original) is list:
                original[:] = new
            else:
                original.clear()
                original.update(new)

    def getattr(self, ref, name):
        return self._value(self._ask(("getattr", ref, name)), objects_ok=True)

    def setattr(self, ref, name, value):
        self._value(self._ask(("setattr", ref, name, self._export(value))), objects_ok=False)

    def finish(self):
        """After a passing step: the candidate's process reports what it rebound (a label)."""
        self._value(self._ask(("end", 0)), objects_ok=False)

    # the candidate's names

    def bind(self, namespace):
        """Put the candidate's names into the tests' globals, from its process's first message;
        raises the candidate's exception when its program failed."""
        try:
            reply = receive(self.replies)
        except OSError:
            reply = None
        except Exception as exc:
            self.fail("crash", f"the candidate's process sent an unreadable reply ({exc!r:.200})")
        reply = self._check(reply, "the candidate's process ended while running its program")
        if reply[0] == "raise" and len(reply) == 3:
            raise self._exception(reply[1], self._text(reply, 2))
        if reply[0] != "names" or len(reply) != 2 or type(reply[1]) is not tuple:
            self.fail("crash", "the candidate's process sent a malformed first message")
        shadows = vars(builtins)
        for entry in reply[1]:
            if type(entry) is not tuple or len(entry) != 3 or type(entry[0]) is not str:
                continue
            name, kind, data = entry
            if name in shadows or not name.isidentifier():
                continue  # a candidate's `def abs` never reaches the tests
            value = self._bound(name, kind, data)
            if value is not None:
                namespace[name] = value

    def _bound(self, name, kind, data):
        if name == self.entry_point and kind not in ("class", "function", "object"):
            # Not a function: a value, a module, or an exception class (whose stand-in the
            # tests would call without ever reaching the candidate).
            return None
        if kind == "value":
            return data if not_plain(data, self.allow_nan) is None else None
        if kind == "module" and type(data) is str:
            return self._module(data)
        if kind == "exception" and type(data) is tuple and data:
            return self._mirror(data)
        if kind in ("class", "function", "object") and type(data) is int:
            if name == self.entry_point:
                kind = "function"  # whatever the candidate made it, its results are plain
            return self.remote(data, kind, name)
        return None

    def _module(self, name):
        """The tests' own import of a standard-library module the candidate imported."""
        if name.partition(".")[0] not in sys.stdlib_module_names:
            return None
        try:
            __import__(name)
        except Exception:
            return None
        return sys.modules.get(name)

    def _mirror(self, mro):
        """A stand-in for one of the candidate's exception classes, on its nearest builtin
        base, so that the tests can catch it (``except``, ``assertRaises``)."""
        if any(type(n) is not str for n in mro):
            return None
        bases = (getattr(builtins, n, None) for n in mro[1:])
        base = next(
            (c for c in bases if type(c) is type and issubclass(c, Exception)
             and c.__name__ not in NOT_CAUGHT_BY_TESTS),
            Exception,
        )  # fmt: skip
        mirror = type(mro[0], (base,), {"__module__": "__candidate__"})
        self.mirrors[mro[0]] = mirror
        return mirror


def _slot(remote, name):
    return object.__getattribute__(remote, "_Remote__" + name)


def _refuse(operation):
    def refuse(self, *args):
        _slot(self, "link").fail(
            "forged_value",
            f"the tests applied {operation} to a {_slot(self, 'type_name')} object of the "
            "candidate's: only its own code could answer that, and only plain data is "
            "compared (read its attributes or call its methods instead)",
        )

    return refuse


class Remote:
    """An object that lives in the candidate's process (one of its functions or classes, or an
    object the tests made with them): call it, read or set its attributes, nothing else."""

    __slots__ = ("__link", "__ref", "__kind", "__type_name")

    def __init__(self, link, ref, kind, type_name):
        for key, value in (("link", link), ("ref", ref), ("kind", kind),
                           ("type_name", type_name)):  # fmt: skip
            object.__setattr__(self, "_Remote__" + key, value)

    def __call__(self, *args, **kwargs):
        return _slot(self, "link").call(_slot(self, "ref"), _slot(self, "kind"), args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # copy, pickle, inspect probe these: not the candidate
        return _slot(self, "link").getattr(_slot(self, "ref"), name)

    def __setattr__(self, name, value):
        _slot(self, "link").setattr(_slot(self, "ref"), name, value)

    def __eq__(self, other):
        if type(other) is Remote:  # two references: identity, as for any object
            return True if other is self else NotImplemented
        return _refuse("==")(self)

    def __ne__(self, other):
        if type(other) is Remote:
            return False if other is self else NotImplemented
        return _refuse("!=")(self)

    __hash__ = object.__hash__

    def __repr__(self):
        return f"<{_slot(self, 'type_name')} of the candidate's>"


for _operation, _method in (
    ("<", "__lt__"), ("<=", "__le__"), (">", "__gt__"), (">=", "__ge__"),
    ("bool()", "__bool__"), ("len()", "__len__"), ("iteration", "__iter__"),
    ("`in`", "__contains__"), ("indexing", "__getitem__"), ("str()", "__str__"),
    ("format()", "__format__"), ("int()", "__int__"), ("float()", "__float__"),
    ("index()", "__index__"), ("abs()", "__abs__"), ("-", "__neg__"), ("+", "__add__"),
    ("+", "__radd__"), ("-", "__sub__"), ("-", "__rsub__"), ("*", "__mul__"), ("*", "__rmul__"),
    ("/", "__truediv__"), ("//", "__floordiv__"), ("%", "__mod__"), ("**", "__pow__"),
):  # fmt: skip
    setattr(Remote, _method, _refuse(_operation))
