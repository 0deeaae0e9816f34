"""The judge: runs a code reward's tests against a candidate that lives in another process.

Loaded from its file by the sandbox launcher (:mod:`r1jax.rl.rewards._sandbox_launcher`) and run
in the launcher's forked child T, which holds the tests and the verdict pipe; the candidate runs
in T's child C (:mod:`r1jax.rl.rewards._candidate_server`), in a PID namespace of its own, so it
cannot name, signal, trace or read T, and holds neither the tests nor the verdict pipe.

Each test's source is executed here, in fresh globals holding:

* the public names of the candidate's module as :class:`Remote` handles (its functions, classes,
  ...) or plain values - never ``__builtins__`` or another dunder, and a builtin's name only when
  the tests exist to check it (:func:`subjects`: a candidate's ``abs`` does not replace the one in
  ``abs(area(2) - 12.56) < 0.01``, MBPP/126's ``sum`` is the task); a module the candidate imported is the judge's
  own import of that stdlib module, and so is a stdlib module name the test uses as a module
  (``math.isclose(...)``) whatever the candidate defined under it (no fake ``math`` class);
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


class Remote:
    """A handle to an object in the candidate's process (module docstring)."""

    __slots__ = ("_rid", "_conn")

    def __init__(self, rid: int, conn):
        object.__setattr__(self, "_rid", rid)
        object.__setattr__(self, "_conn", conn)

    def _call(self, op, *args):
        return self._conn.request(op, self._rid, args)

    def __call__(self, *args, **kwargs):
        return self._call("call", args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._call("getattr", name)

    def __setattr__(self, name, value):  # a test building the candidate's objects: root.left = Node(2)
        self._call("setattr", name, value)

    def __setitem__(self, key, value):
        self._call("setitem", key, value)

    def __iter__(self):
        return self._call("iter")

    def __next__(self):
        return self._call("next")

    def __len__(self):
        n = self._call("len")
        if type(n) is not int or n < 0:
            raise TypeError("len() of a candidate object must be a non-negative int")
        return n

    def __getitem__(self, key):
        return self._call("getitem", key)

    def __bool__(self):
        b = self._call("bool")
        if type(b) is not bool:
            raise TypeError("bool() of a candidate object must be a bool")
        return b

    def __repr__(self):
        r = self._call("repr")
        return r if type(r) is str else "<candidate object>"

    def __str__(self):
        r = self._call("str")
        return r if type(r) is str else "<candidate object>"

    def __reduce__(self):
        raise TypeError("a candidate object cannot be pickled")


class _Sealed(pickle.Pickler):
    def persistent_id(self, o):
        return ("h", object.__getattribute__(o, "_rid")) if type(o) is Remote else None


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


def _module(name):
    """The real stdlib module ``name`` (top-level names only), imported here; None otherwise."""
    if type(name) is not str or not name.isidentifier() or name.startswith("_") or name in _NO_IMPORT \
            or name not in getattr(sys, "stdlib_module_names", ()):
        return None
    try:
        return __import__(name)
    except BaseException:  # noqa: BLE001  (an import that raises SystemExit is no module)
        return None


def module_uses(src: str) -> set[str]:
    """Names a test uses as modules (``math.isclose``) that are stdlib module names: the judge binds
    the real module for them, whatever the candidate defined under that name (a function of the
    candidate's named ``copy`` that the test calls stays the candidate's)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    std = getattr(sys, "stdlib_module_names", ())
    return {n.value.id for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in std}


def subjects(tests: list[str], entry_point=None) -> set[str]:
    """The names the tests exist to check: the ``entry_point`` when given (HumanEval); otherwise the
    names called in every test, those that are not builtins if there are any (``abs(area(2) - 12.56)
    < 0.01`` checks ``area``, not ``abs``), else the builtin ones (MBPP/126 asks for a ``sum``)."""
    if entry_point:
        return {str(entry_point)}
    common = None
    for src in tests:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            return set()
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        common = called if common is None else common & called
    common = common or set()
    mine = {n for n in common if n not in builtins.__dict__}
    return mine or common


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
        for name in module_uses(src) - set(trusted):
            mod = _module(name)
            if mod is not None:
                g[name] = mod
        try:
            exec(compile(src, f"<test {i}>", "exec"), g)
            ok = True
        except BaseException:  # noqa: BLE001
            traceback.print_exc(file=sys.stdout)
            ok = False
        emit(i, ok)
