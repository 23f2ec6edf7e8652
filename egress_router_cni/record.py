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
arguments and defaults.
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
            if kwargs or len(args) != len(fields):
                args = cls._arguments(args, kwargs)
            return tuple.__new__(cls, args)

        @classmethod
        def _arguments(cls, args, kwargs):
            """The field values for a call with keywords or omitted defaults; TypeError as a function call would."""
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
