"""The judge: runs a code reward's tests against a candidate that lives in another process.

Loaded from its file by the sandbox launcher (:mod:`r1jax.rewards._sandbox_launcher`) and run
in the launcher's forked child T, which holds the tests and the verdict pipe; the candidate runs
in T's child C (:mod:`r1jax.rewards._candidate_server`), in a PID namespace of its own, so it
cannot name, signal, trace or read T, and holds neither the tests nor the verdict pipe.

Each test's source is executed here, in fresh globals holding:

* the public names of the candidate's module as :class:`Remote` handles (its functions, classes,
  ...) or plain values - never ``__builtins__`` or another dunder, and a builtin's name only when
  the tests exist to check it (:func:`subjects`: a candidate's ``abs`` does not replace the one in
  ``abs(area(2) - 12.56) < 0.01``, MBPP/126's ``sum`` is the task); a module the candidate imported is the judge's
  own import of that stdlib module (or of numpy, scipy, pandas, sympy, networkx), and so is a
  module name the test uses as a module (``math.isclose(...)``, ``np.allclose(...)``) whatever the
  candidate defined under it, when the module has the attributes the test reads (no fake ``math``
  class; a candidate's ``queue = Queue()`` with ``queue.enqueue`` stays the candidate's);
* when the task gives a trusted ``prompt`` (HumanEval's signature and docstring), the prompt's
  own definitions, which win over the candidate's (HumanEval/38's test encodes with the prompt's
  ``encode_cyclic``, not with one the candidate redefines), except the *stubs* the candidate is
  asked to write (functions whose body is only a docstring / ``pass`` / ``...``) and the
  ``entry_point``, which are the candidate's.

A call of a handle sends the arguments (pickled; tests pass data, not functions) to C, which
calls the function and replies with the result, plain or as a handle; replies are read with an
unpickler that builds no object but plain data, ``Decimal``, ``Fraction`` and handles. An
exception in C is raised here as the builtin exception of that name (``ValueError``, ...;
others as :class:`CandidateError`), so tests that expect one still pass. :class:`Remote` forwards
calls, iteration, ``len``, indexing, truth, attributes (get and set), item assignment and ``repr``,
never a comparison: ``==``
between a handle and anything else is identity, ``in`` iterates, ``<`` raises. A test passes when
its source runs to the end here; its verdict goes to the launcher over a pipe that C never holds.
"""
from __future__ import annotations

import ast
import builtins
import io
import os
import pickle
import struct
import sys
import traceback

MAX_MESSAGE = 64 << 20  # bytes; a longer reply is a failure of that call


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one, or its process is gone."""


def _ask(o, op, *args):
    """Forward ``op`` on the candidate object behind handle ``o`` (a function, not a method of
    :class:`Remote`, so that no attribute name of the candidate's objects is shadowed)."""
    return object.__getattribute__(o, "_r1jax_conn").request(op, object.__getattribute__(o, "_r1jax_rid"), args)


class Remote:
    """A handle to an object in the candidate's process (module docstring)."""

    __slots__ = ("_r1jax_rid", "_r1jax_conn")

    def __init__(self, rid: int, conn):
        object.__setattr__(self, "_r1jax_rid", rid)
        object.__setattr__(self, "_r1jax_conn", conn)

    def __call__(self, *args, **kwargs):
        return _ask(self, "call", args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _ask(self, "getattr", name)

    def __setattr__(self, name, value):  # a test building the candidate's objects: root.left = Node(2)
        _ask(self, "setattr", name, value)

    def __delattr__(self, name):
        _ask(self, "delattr", name)

    def __setitem__(self, key, value):
        _ask(self, "setitem", key, value)

    def __delitem__(self, key):
        _ask(self, "delitem", key)

    def __instancecheck__(self, obj):  # isinstance(x, CandidateClass)
        return _ask(self, "isinstance", obj) is True

    def __subclasscheck__(self, cls):
        return _ask(self, "issubclass", cls) is True

    def __iter__(self):
        return _ask(self, "iter")

    def __next__(self):
        return _ask(self, "next")

    def __len__(self):
        n = _ask(self, "len")
        if type(n) is not int or n < 0:
            raise TypeError("len() of a candidate object must be a non-negative int")
        return n

    def __getitem__(self, key):
        return _ask(self, "getitem", key)

    def __bool__(self):
        b = _ask(self, "bool")
        if type(b) is not bool:
            raise TypeError("bool() of a candidate object must be a bool")
        return b

    def __repr__(self):
        r = _ask(self, "repr")
        return r if type(r) is str else "<candidate object>"

    def __str__(self):
        r = _ask(self, "str")
        return r if type(r) is str else "<candidate object>"

    def __reduce__(self):
        raise TypeError("a candidate object cannot be pickled")


class _Sealed(pickle.Pickler):
    def persistent_id(self, o):
        return ("h", object.__getattribute__(o, "_r1jax_rid")) if type(o) is Remote else None


_ALLOWED = {("builtins", "complex"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
            ("builtins", "range"), ("decimal", "Decimal"), ("fractions", "Fraction")}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, conn):
        super().__init__(io.BytesIO(data))
        self._conn = conn

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"candidate reply refused: {module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 2 and pid[0] == "h" and type(pid[1]) is int):
            raise pickle.UnpicklingError("bad handle")
        return Remote(pid[1], self._conn)


class Conn:
    """Requests to the candidate's process over two pipes; replies decoded as plain data."""

    def __init__(self, wfd: int, rfd: int):
        self.wfd, self.rfd = wfd, rfd
        self.dead = None  # why the candidate can no longer answer

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            c = os.read(self.rfd, min(n, 1 << 20))
            if not c:
                raise EOFError
            chunks.append(c)
            n -= len(c)
        return b"".join(chunks)

    def recv(self):
        if self.dead:
            raise CandidateError(self.dead)
        try:
            (n,) = struct.unpack("<Q", self._read(8))
            if n > MAX_MESSAGE:
                raise ValueError(f"reply of {n} bytes (at most {MAX_MESSAGE})")
            return _PlainUnpickler(self._read(n), self).load()
        except EOFError:
            self.dead = "the candidate's process exited"
        except Exception as e:  # noqa: BLE001  (a malformed stream: nothing more can be read from it)
            self.dead = f"unreadable reply from the candidate: {type(e).__name__}: {e}"
        raise CandidateError(self.dead)

    def send(self, msg) -> None:
        if self.dead:
            raise CandidateError(self.dead)
        buf = io.BytesIO()
        _Sealed(buf, protocol=5).dump(msg)
        data = struct.pack("<Q", len(buf.getvalue())) + buf.getvalue()
        try:
            while data:
                data = data[os.write(self.wfd, data):]
        except OSError:
            self.dead = "the candidate's process exited"
            raise CandidateError(self.dead) from None

    def request(self, op: str, rid: int, args: tuple):
        self.send((op, rid, args))
        reply = self.recv()
        if not isinstance(reply, tuple) or not reply:
            raise CandidateError("malformed reply")
        if reply[0] == "ok" and len(reply) == 2:
            return reply[1]
        if reply[0] == "stop":
            if op == "next":
                raise StopIteration
            raise CandidateError(f"StopIteration from {op!r}")  # never ends a judge-side map() early
        if reply[0] == "err" and len(reply) == 3:
            name, text = str(reply[1]), str(reply[2])
            cls = getattr(builtins, name, None)
            if (isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, StopIteration)
                    and not issubclass(cls, StopAsyncIteration)):
                raise cls(text)
            raise CandidateError(f"{name}: {text}")
        raise CandidateError("malformed reply")


def stub_names(prompt: str) -> set[str]:
    """Top-level functions of ``prompt`` whose body is only a docstring, ``pass`` or ``...``."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return set()
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body = body[1:]
            if all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                               and s.value.value is Ellipsis) for s in body):
                out.add(node.name)
    return out


_NO_IMPORT = {"antigravity", "this", "__hello__", "__phello__", "idlelib", "tkinter", "turtle", "turtledemo",
              "webbrowser", "pydoc", "pdb", "code", "ensurepip", "venv", "lib2to3"}  # side effects at import


def _module(name, third_party: bool = False):
    """The real module ``name`` (a top-level stdlib name, or one of :data:`PACKAGES` when
    ``third_party``), imported here; None otherwise (or where it cannot be imported)."""
    if type(name) is not str or not name.isidentifier() or name.startswith("_") or name in _NO_IMPORT:
        return None
    if name not in getattr(sys, "stdlib_module_names", ()) and not (third_party or name in PACKAGES.values()):
        return None
    try:
        return __import__(name)
    except BaseException:  # noqa: BLE001  (an import that raises SystemExit is no module)
        return None


# third-party modules a test may use without importing them (MBPP's test_imports), by the names
# tests use for them; anything else the judge imports is a top-level stdlib module
PACKAGES = {"numpy": "numpy", "np": "numpy", "scipy": "scipy", "sp": "scipy", "pandas": "pandas", "pd": "pandas",
            "sympy": "sympy", "networkx": "networkx", "nx": "networkx"}


def module_uses(src: str) -> dict[str, set[str]]:
    """{name: attributes} for each bare name a test uses as a module (``math.isclose`` -> math:
    {isclose}), among stdlib module names and :data:`PACKAGES`."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return {}
    std = getattr(sys, "stdlib_module_names", ())
    out: dict[str, set[str]] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and (n.value.id in std
                                                                             or n.value.id in PACKAGES):
            out.setdefault(n.value.id, set()).add(n.attr)
    return out


def _real_modules(src: str, g: dict, trusted: dict) -> None:
    """Bind the real module for each name ``src`` uses as one (module_uses) that the trusted prompt
    does not define, when that module has every attribute the test reads: a candidate's fake
    ``math`` (or ``np``) never stands in for the real one, while a candidate's object that merely
    shares a module's name (``queue = Queue()``, ``queue.enqueue(1)``) stays the candidate's."""
    for name, attrs in module_uses(src).items():
        if name in trusted:
            continue
        mod = _module(PACKAGES.get(name, name), third_party=name in PACKAGES)
        if mod is not None and all(hasattr(mod, a) for a in attrs):
            g[name] = mod


def subjects(tests: list[str], entry_point=None) -> set[str]:
    """The names the tests exist to check, the only builtin names a candidate may define for them:
    the ``entry_point`` when given (HumanEval); otherwise the names called in every test - never a
    builtin's when another name is (``abs(area(2) - 12.56) < 0.01`` checks ``area``), and a builtin's
    only when it is the one name called in every test, on data alone, once per test (MBPP/126's
    ``sum(10, 15) == 6``; not ``sorted(f.g(x)) == sorted(y)`` nor ``abs(pow(2, .5) - 1.414) < 1e-6``)."""
    if entry_point:
        return {str(entry_point)}
    common, calls = None, []
    for src in tests:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            return set()
        found = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        calls.append(found)
        names = {n.func.id for n in found}
        common = names if common is None else common & names
    common = common or set()
    mine = {n for n in common if n not in builtins.__dict__}
    if mine:
        return mine
    if len(common) != 1:
        return set()
    (name,) = common
    for found in calls:
        uses = [n for n in found if n.func.id == name]
        args = list(uses[0].args) + [k.value for k in uses[0].keywords] if uses else []
        if len(uses) != 1 or any(isinstance(a, ast.Call) for arg in args for a in ast.walk(arg)):
            return set()
    return {name}


def _candidate_globals(names, subject: set = frozenset()) -> dict:
    """The test's view of the candidate module's names (module docstring). ``names`` comes from the
    candidate: only public identifiers are taken (never ``__builtins__`` or other dunders), and a
    builtin's name only when it is what the tests check (:func:`subjects`); a module comes as the
    judge's own import of that name."""
    if not isinstance(names, dict):
        raise TypeError("the candidate's names are not a dict")
    g = {}
    for name, item in names.items():
        if type(name) is not str or not name.isidentifier() or name.startswith("__") or \
                (name in builtins.__dict__ and name not in subject):
            continue
        if not (type(item) is tuple and len(item) == 2 and item[0] in ("module", "value")):
            continue
        kind, value = item
        if kind == "module":
            mod = _module(value)
            if mod is not None:
                g[name] = mod
        else:
            g[name] = value
    return g


def judge(spec: dict, wfd: int, rfd: int, emit) -> None:
    """Run ``spec["tests"]`` (sources) against the candidate served on (wfd, rfd); ``emit(i, ok)``
    per test, in order. ``spec``: tests, prompt (trusted, optional), entry_point (optional)."""
    tests = list(spec["tests"])
    prompt = spec.get("prompt") or ""
    entry = spec.get("entry_point")
    trusted = {}
    if prompt:
        try:
            tg = {"__name__": "__r1jax_prompt__", "__builtins__": builtins}
            exec(compile(prompt, "<prompt>", "exec"), tg)
            mine = stub_names(prompt) | ({entry} if entry else set())
            trusted = {k: v for k, v in tg.items() if not k.startswith("__") and k not in mine}
        except BaseException:  # noqa: BLE001  (a prompt that is not a whole program: nothing trusted)
            trusted = {}
    for stream in (sys.stdout, sys.stderr):  # a candidate's exception text (lone surrogates) cannot stop the judge
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    conn = Conn(wfd, rfd)
    base = None
    try:
        hello = conn.recv()
        if type(hello) is tuple and len(hello) == 2 and hello[0] == "ready":
            base = _candidate_globals(hello[1], subjects(tests, entry))
        else:
            print(f"candidate did not load: {str(hello)[:2000]}")
    except BaseException as e:  # noqa: BLE001  (whatever the candidate sent, it only fails its tests)
        print(f"candidate did not load: {type(e).__name__}: {e}")
        base = None
    for i, src in enumerate(tests):
        if base is None or conn.dead:
            emit(i, False)
            continue
        g = {**base, **trusted, "__name__": "__r1jax_test__", "__builtins__": builtins}
        _real_modules(src, g, trusted)
        try:
            exec(compile(src, f"<test {i}>", "exec"), g)
            ok = True
        except BaseException:  # noqa: BLE001
            traceback.print_exc(file=sys.stdout)
            ok = False
        emit(i, ok)
