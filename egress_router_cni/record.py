"""Record: a typing.NamedTuple for mypy, a plain collections.namedtuple at run time.

`class LinkInfo(Record):` with annotated fields (and defaults, methods,
docstrings) reads exactly like a NamedTuple class. typing.NamedTuple turns
every field's annotation into a ForwardRef, which compiles the annotation
string (all annotations are strings under `from __future__ import
annotations`): ~95 compile() calls, 2-3 ms of every plugin exec. Here the
annotations are kept as they are and nothing is compiled.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    from collections import namedtuple

    class _RecordMeta(type):
        def __new__(mcls, name, bases, namespace):
            if namespace.get("_record_root"):
                return super().__new__(mcls, name, bases, namespace)
            annotations = namespace.get("__annotations__", {})
            fields = tuple(annotations)
            defaults = [namespace[f] for f in fields if f in namespace]
            base = namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            body = {k: v for k, v in namespace.items() if k not in fields}
            body.setdefault("__slots__", ())
            return type(name, (base,), body)

    class Record(metaclass=_RecordMeta):
        """Base of the plugin's records (see the module docstring)."""

        _record_root = True


__all__ = ["Record"]
