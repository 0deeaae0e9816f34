"""The candidate's side of the code-reward harness: runs *inside* the sandboxed program, untrusted.

Not imported by r1jax: :mod:`r1jax.rewards.code` sends this file's text, followed by a call
``_r1_serve(<candidate source>)``, as the sandboxed program's ``main.py``. It loads the candidate
module and then answers the judge's requests (:mod:`r1jax.rewards._judge`) over two pipes,
fd 3 (requests in) and fd 4 (replies out), each message an 8-byte little-endian length and a
pickle.

Nothing here is trusted: the candidate can replace any of it. What it can achieve by doing so is
what it could achieve by returning other values from its functions, because the judge, in
another process the candidate cannot name or reach, owns the tests and the verdicts, and reads
replies with a whitelist unpickler.

Values go back *plain*: exact ``None``/bool/int/float/complex/str/bytes/bytearray/range and lists,
tuples, dicts, sets, frozensets of them (``Decimal`` / ``Fraction`` by value); instances of
*subclasses* of int, float, str, bytes, list, tuple, dict, set, frozenset are copied into the
base type through the base type's own slots (an ``int`` subclass whose ``__eq__`` always says
True arrives as a plain int; a namedtuple as a tuple). Every other object (the candidate's
functions, classes, instances, generators, modules) stays here and travels as a handle that the
judge can call, iterate, index, take the length, truth value, attributes or repr of, set and
delete attributes and items on, and test instances against (a class).
"""


def _r1_serve(_code, _rfd=3, _wfd=4):  # noqa: C901  (one self-contained loop)
    import builtins
    import os
    import pickle
    import struct
    import sys

    def print_exc():  # traceback is imported only when there is one to print
        import traceback

        traceback.print_exc()

    handles = {}
    ids = {}

    class H:  # a handle marker in a reply
        __slots__ = ("i",)

        def __init__(self, i):
            self.i = i

        def __hash__(self):
            return hash(("h", self.i))

        def __eq__(self, other):
            return type(other) is H and other.i == self.i

    def handle(o):
        k = id(o)
        if k not in ids:
            ids[k] = len(handles) + 1
            handles[ids[k]] = o
        return H(ids[k])

    exact = (type(None), bool, int, float, complex, str, bytes, bytearray, range)
    by_value = {"Decimal": "decimal", "Fraction": "fractions"}  # exact types only, sent by value

    def plain(v, memo):
        t = type(v)
        if t in exact:
            return v
        mod = by_value.get(t.__name__)
        if mod is not None and getattr(sys.modules.get(mod), t.__name__, None) is t:
            return v
        k = id(v)
        if k in memo:
            return memo[k]
        if isinstance(v, int):  # (bool cannot be subclassed: an exact bool is in `exact`)
            return int.__index__(v)
        if isinstance(v, float):
            return float.__float__(v)
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, bytes):
            return bytes.__getitem__(v, slice(None))
        if isinstance(v, list):
            out = memo[k] = []
            out.extend(plain(x, memo) for x in list.__iter__(v))
            return out
        if isinstance(v, tuple):
            out = memo[k] = tuple(plain(x, memo) for x in tuple.__iter__(v))
            return out
        if isinstance(v, dict):
            out = memo[k] = {}
            for a, b in dict.items(v):
                out[plain(a, memo)] = plain(b, memo)
            return out
        if isinstance(v, frozenset):
            out = memo[k] = frozenset(plain(x, memo) for x in frozenset.__iter__(v))
            return out
        if isinstance(v, set):
            out = memo[k] = set(plain(x, memo) for x in set.__iter__(v))
            return out
        return handle(v)

    class P(pickle.Pickler):
        def persistent_id(self, o):
            return ("h", o.i) if type(o) is H else None

    class U(pickle.Unpickler):
        def persistent_load(self, pid):
            return handles[pid[1]]

    def send(msg):
        import io

        buf = io.BytesIO()
        P(buf, protocol=5).dump(msg)
        data = buf.getvalue()
        data = struct.pack("<Q", len(data)) + data
        while data:
            data = data[os.write(_wfd, data):]

    def recv_exact(n):
        chunks = []
        while n:
            c = os.read(_rfd, min(n, 1 << 20))
            if not c:
                raise EOFError
            chunks.append(c)
            n -= len(c)
        return b"".join(chunks)

    def recv():
        import io

        (n,) = struct.unpack("<Q", recv_exact(8))
        return U(io.BytesIO(recv_exact(n))).load()

    def reply(fn):
        try:
            send(("ok", plain(fn(), {})))
        except StopIteration:
            send(("stop",))
        except BaseException as e:  # noqa: BLE001  (SystemExit in a function is a failure, not an exit)
            print_exc()
            try:
                text = str(e)[:2000]
            except BaseException:  # noqa: BLE001
                text = "<unprintable>"
            send(("err", type(e).__name__, text))

    g = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(_code, "<candidate>", "exec"), g)
    except BaseException as e:  # noqa: BLE001
        print_exc()
        send(("load_error", f"{type(e).__name__}: {e}"[:2000]))
        return
    names = {}
    for name, v in list(g.items()):
        if name.startswith("__"):
            continue
        if type(v) is type(sys):
            names[name] = ("module", getattr(v, "__name__", name))
        else:
            names[name] = ("value", plain(v, {}))
    send(("ready", names))
    ops = {
        "call": lambda o, a, k: o(*a, **k),
        "getattr": lambda o, name: getattr(o, name),
        "setattr": lambda o, name, value: setattr(o, name, value),
        "delattr": lambda o, name: delattr(o, name),
        "setitem": lambda o, key, value: o.__setitem__(key, value),
        "delitem": lambda o, key: o.__delitem__(key),
        "isinstance": lambda o, x: isinstance(x, o),
        "issubclass": lambda o, x: issubclass(x, o),
        "iter": lambda o: iter(o),
        "next": lambda o: next(o),
        "len": lambda o: len(o),
        "getitem": lambda o, key: o[key],
        "bool": lambda o: bool(o),
        "repr": lambda o: repr(o)[:10000],
        "str": lambda o: str(o)[:10000],
    }
    while True:
        try:
            req = recv()
        except EOFError:
            return
        op, hid, args = req
        obj = handles.get(hid)
        fn = ops.get(op)
        if fn is None or obj is None:
            send(("err", "RuntimeError", f"bad request {op!r}"))
            continue
        reply(lambda: fn(obj, *args))
