"""DEL keeps every NAT backend it opened closed however the cleanup ends (teardown._Open, ExitStack's job)."""

from __future__ import annotations

from typing import Any, List, Optional

import pytest

from egress_router_cni.teardown import _Open


class Backend:
    """Records its enter/exit in a shared journal; can be told to fail either."""

    def __init__(self, name: str, journal: List[str], fail_enter: bool = False, fail_exit: bool = False) -> None:
        self.name, self.journal, self.fail_enter, self.fail_exit = name, journal, fail_enter, fail_exit

    def __enter__(self) -> Backend:
        if self.fail_enter:
            raise OSError(f"{self.name} cannot open")
        self.journal.append(f"enter {self.name}")
        return self

    def __exit__(self, kind: Any, value: Optional[BaseException], tb: Any) -> None:
        self.journal.append(f"exit {self.name} ({type(value).__name__ if value else 'ok'})")
        if self.fail_exit:
            raise OSError(f"{self.name} cannot close")


def test_backends_exit_in_reverse_order() -> None:
    journal: List[str] = []
    a, b = Backend("a", journal), Backend("b", journal)
    with _Open([a, b]) as opened:  # type: ignore[list-item]
        assert opened == [a, b]
        journal.append("work")
    assert journal == ["enter a", "enter b", "work", "exit b (ok)", "exit a (ok)"]


def test_an_error_in_the_block_reaches_every_exit_and_propagates() -> None:
    journal: List[str] = []
    with pytest.raises(ValueError, match="cleanup failed"), _Open([Backend("a", journal), Backend("b", journal)]):  # type: ignore[list-item]
        raise ValueError("cleanup failed")
    assert journal == ["enter a", "enter b", "exit b (ValueError)", "exit a (ValueError)"]


def test_a_failing_exit_does_not_keep_the_others_open() -> None:
    journal: List[str] = []
    backends = [Backend("a", journal), Backend("b", journal, fail_exit=True)]
    with pytest.raises(OSError, match="b cannot close"), _Open(backends):  # type: ignore[arg-type]
        pass
    assert journal == ["enter a", "enter b", "exit b (ok)", "exit a (ok)"]


def test_a_failing_enter_closes_what_was_opened() -> None:
    journal: List[str] = []
    backends = [Backend("a", journal), Backend("b", journal, fail_enter=True), Backend("c", journal)]
    with pytest.raises(OSError, match="b cannot open"), _Open(backends):  # type: ignore[arg-type]
        journal.append("work")  # never reached
    assert journal == ["enter a", "exit a (OSError)"]
