"""Record: a typing.NamedTuple for mypy, a small tuple subclass at run time.

`class LinkInfo(Record):` with annotated fields (and defaults, methods,
docstrings) reads exactly like a NamedTuple class and behaves like one
(tuple equality and hashing, `_fields`, `_field_defaults`, `_replace`,
`_asdict`, the same repr). Neither typing.NamedTuple nor
collections.namedtuple is used at run time: typing costs ~15 ms to import
and compiles every field's annotation string (~95 `compile()` calls per
exec), and collections (with operator, keyword, reprlib, itertools) is
another few ms whose namedtuple `eval`s a constructor per class. Here a
record class is one `type()` call: its fields are `_tuplegetter`s (the C
accessor namedtuple itself uses) and one shared constructor maps keyword
arguments and defaults; only a class built many times by keyword (a
destination, a NAT rule) gets namedtuple's compiled constructor, once it is.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    from _collections import _tuplegetter  # C: the field accessor collections.namedtuple uses

    class _Fields(tuple):
        """What every record class shares: construction by position or keyword, and NamedTuple's helpers."""

        __slots__ = ()
        _fields = ()
        _field_defaults = {}

        def __new__(cls, *args, **kwargs):
            fields = cls._fields
            if not kwargs:
                if len(args) == len(fields):
                    return tuple.__new__(cls, args)
            elif not args:
                _count(cls)
                # All by keyword, the usual call: the defaults merged in and read in field order, in C.
                given = {**cls._field_defaults, **kwargs}
                if len(given) == len(fields):
                    try:
                        return tuple.__new__(cls, map(given.__getitem__, fields))
                    except KeyError:
                        pass  # a field is missing (and an unknown keyword given): reported below
            return tuple.__new__(cls, cls._arguments(args, kwargs))

        @classmethod
        def _arguments(cls, args, kwargs):
            """The field values of any other call; TypeError as a function call with these parameters would raise."""
            fields, name = cls._fields, cls.__name__
            if len(args) > len(fields):
                raise TypeError(f"{name}() takes {len(fields)} positional arguments but {len(args)} were given")
            values = list(args)
            for field in fields[len(args) :]:
                if field in kwargs:
                    values.append(kwargs.pop(field))
                elif field in cls._field_defaults:
                    values.append(cls._field_defaults[field])
                else:
                    raise TypeError(f"{name}() missing required argument: {field!r}")
            if kwargs:
                word = next(iter(kwargs))
                why = "multiple values for argument" if word in fields else "an unexpected keyword argument"
                raise TypeError(f"{name}() got {why} {word!r}")
            return values

        def __repr__(self):
            inner = ", ".join(f"{field}={value!r}" for field, value in zip(self._fields, self))
            return f"{type(self).__name__}({inner})"

        def __getnewargs__(self):
            return tuple(self)

        def _replace(self, **changes):
            values = [changes.pop(field, value) for field, value in zip(self._fields, self)]
            if changes:
                raise ValueError(f"Got unexpected field names: {list(changes)!r}")
            return tuple.__new__(type(self), values)

        def _asdict(self):
            return dict(zip(self._fields, self))

    # Keyword calls above cost ~1 us against ~0.3 for a constructor with the fields as
    # parameters, which namedtuple compiles for every class (~30 us each, most of them
    # built a few times per exec). A class called by keyword this often gets one.
    _COMPILE_AFTER = 64
    _calls = {}

    def _count(cls):
        calls = _calls[cls] = _calls.get(cls, 0) + 1
        if calls == _COMPILE_AFTER:
            cls.__new__ = _compiled_new(cls)

    def _compiled_new(cls):
        """namedtuple's constructor for cls: `def __new__(_cls, a, b=default): return tuple.__new__(_cls, (a, b))`."""
        names = ", ".join(cls._fields)
        scope = {"_tuple_new": tuple.__new__, "__builtins__": {}}
        new = eval(f"lambda _cls, {names}: _tuple_new(_cls, ({names},))", scope)
        new.__defaults__ = tuple(cls._field_defaults.values()) or None
        new.__name__, new.__qualname__ = "__new__", f"{cls.__qualname__}.__new__"
        return staticmethod(new)

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_record_root"):
                return super().__new__(mcls, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", {}))
            body = {k: v for k, v in namespace.items() if k not in fields}
            body.setdefault("__slots__", ())
            body["_fields"] = fields
            body["_field_defaults"] = {f: namespace[f] for f in fields if f in namespace}
            for index, field in enumerate(fields):
                body[field] = _tuplegetter(index, f"Alias for field number {index}")
            return type(name, (_Fields,), body)

    class Record(metaclass=_RecordMeta):
        """Base of the plugin's records (see the module docstring)."""

        _record_root = True


__all__ = ["Record"]
