"""Record behaves as the typing.NamedTuple it stands in for."""

from __future__ import annotations

from typing import NamedTuple, Optional

from egress_router_cni.record import Record


class Typed(NamedTuple):
    """A docstring."""

    index: int
    name: str
    kind: Optional[str] = None
    up: bool = False

    def label(self) -> str:
        return f"{self.name}#{self.index}"


class Plain(Record):
    """A docstring."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as LinkInfo does
    name: str
    kind: Optional[str] = None
    up: bool = False

    def label(self) -> str:
        return f"{self.name}#{self.index}"


def test_record_matches_named_tuple() -> None:
    typed, plain = Typed(3, "net1", up=True), Plain(3, "net1", up=True)
    assert tuple(plain) == tuple(typed) == (3, "net1", None, True)
    assert plain._fields == typed._fields
    assert plain._field_defaults == typed._field_defaults
    assert repr(plain) == repr(typed).replace("Typed", "Plain")
    assert plain.label() == typed.label() == "net1#3"
    assert plain._replace(name="eth0") == (3, "eth0", None, True)
    assert plain._asdict() == typed._asdict()
    assert Plain.__doc__ == "A docstring."
    assert isinstance(plain, tuple) and type(plain).__name__ == "Plain"
    assert plain == Plain(3, "net1", None, True) and hash(plain) == hash(Plain(3, "net1", None, True))


def test_record_keeps_tuple_semantics() -> None:
    plain = Plain(1, "a")
    assert not hasattr(plain, "__dict__")  # __slots__ = (): as small as a NamedTuple
    try:
        Plain()  # type: ignore[call-arg]
    except TypeError:
        pass
    else:
        raise AssertionError("missing fields must raise TypeError")


def test_record_constructs_and_copies_as_named_tuple_does() -> None:
    """Keywords, defaults, and the errors of a wrong call, as NamedTuple's generated __new__ gives them."""
    import copy
    import pickle

    assert Plain(name="a", index=1) == Typed(name="a", index=1) == (1, "a", None, False)
    assert Plain(1, "a", up=True) == Typed(1, "a", up=True)
    for bad_call in (
        lambda cls: cls(1),  # missing a field without default
        lambda cls: cls(1, "a", name="b"),  # a field given twice
        lambda cls: cls(1, "a", colour="red"),  # no such field
        lambda cls: cls(1, "a", None, False, "extra"),  # too many
    ):
        for cls in (Typed, Plain):
            try:
                bad_call(cls)
            except TypeError:
                continue
            raise AssertionError(f"{cls.__name__}: a wrong call must raise TypeError")
    plain = Plain(2, "b", "macvlan")
    try:
        plain._replace(colour="red")
    except ValueError:
        pass
    else:
        raise AssertionError("_replace of an unknown field must raise ValueError")
    assert copy.copy(plain) == copy.deepcopy(plain) == plain
    assert pickle.loads(pickle.dumps(plain)) == plain  # Plain is module-level: picklable by name
    assert plain.index == 2 and Plain.index.__doc__ == Typed.index.__doc__  # type: ignore[attr-defined]


def test_record_called_often_by_keyword_behaves_the_same() -> None:
    """After many keyword calls a record class gets a compiled constructor (record.py): same results, same errors."""

    class Often(Record):
        family: int
        name: str
        port: Optional[int] = None
        up: bool = False

    made = [Often(family=4, name=f"n{i}", up=i % 2 == 0) for i in range(200)]
    assert made[150] == (4, "n150", None, True) and made[151] == (4, "n151", None, False)
    assert Often(6, "x") == Often(6, "x", None, False) == Often(name="x", family=6)
    assert Often(6, name="x", port=80) == (6, "x", 80, False)
    assert Often.__new__.__qualname__.endswith("Often.__new__")  # its own constructor by now
    for bad_call in (
        lambda: Often(family=4),
        lambda: Often(4, "a", family=6),
        lambda: Often(4, "a", colour="red"),
        lambda: Often(4, "a", 1, True, "extra"),
    ):
        try:
            bad_call()
        except TypeError:
            continue
        raise AssertionError("a wrong call must raise TypeError")
