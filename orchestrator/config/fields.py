"""
Reading values out of a YAML document so that every error names the file and the key.

_At is a position in a document (file, dotted key, value); the converters check one value's type and range and
fail with a ConfigError at that position. nodes.py and settings.py parse with them. The names keep their
leading underscore: they are private to this package, not to this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.errors import ConfigError
from orchestrator.models import Family

T = TypeVar("T")


class _At:
    """A position in a YAML document, for error messages that name the file and key."""

    def __init__(self, file: str, key: str, value: Any) -> None:
        self.file, self.key, self.value = file, key, value

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key, problem)

    def child(self, name: str | int) -> _At:
        key = f"{self.key}[{name}]" if isinstance(name, int) else f"{self.key}.{name}" if self.key else name
        value = self.value.get(name) if isinstance(self.value, dict) and isinstance(name, str) else None
        if isinstance(name, int) and isinstance(self.value, list):
            value = self.value[name]
        return _At(self.file, key, value)

    def mapping(self) -> dict[str, Any]:
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            raise self.fail("expected a mapping")
        return self.value

    def items(self) -> list[_At]:
        if not isinstance(self.value, list):
            raise self.fail("expected a list")
        return [self.child(i) for i in range(len(self.value))]

    def get(self, name: str, conv: Callable[[_At], T], default: T) -> T:
        c = self.child(name)
        return default if c.value is None else conv(c)

    def need(self, name: str, conv: Callable[[_At], T]) -> T:
        c = self.child(name)
        if c.value is None:
            raise c.fail("required")
        return conv(c)

    def only(self, allowed: set[str]) -> None:
        for k in self.mapping():
            if k not in allowed:
                raise self.child(str(k)).fail(f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _str(at: _At) -> str:
    if isinstance(at.value, bool) or not isinstance(at.value, (str, int, float)):
        raise at.fail("expected a string")
    return str(at.value)


def _int(at: _At) -> int:
    if isinstance(at.value, bool) or not isinstance(at.value, int):
        raise at.fail(f"expected an integer, got {at.value!r}")
    return at.value


def _pos_int(at: _At) -> int:
    v = _int(at)
    if v < 1:
        raise at.fail(f"expected a positive integer, got {v}")
    return v


def _opt_int(at: _At) -> int | None:
    return _pos_int(at)


def _num(at: _At) -> float:
    if isinstance(at.value, bool) or not isinstance(at.value, (int, float)):
        raise at.fail(f"expected a number, got {at.value!r}")
    if at.value < 0:
        raise at.fail(f"expected a number >= 0, got {at.value}")
    return float(at.value)


def _bool(at: _At) -> bool:
    if not isinstance(at.value, bool):
        raise at.fail(f"expected true or false, got {at.value!r}")
    return at.value


def _enum(kind: type[T]) -> Callable[[_At], T]:
    def conv(at: _At) -> T:
        try:
            return kind(at.value)  # type: ignore[call-arg]
        except ValueError:
            allowed = ", ".join(str(m.value) for m in kind)  # type: ignore[attr-defined]
            raise at.fail(f"expected one of {allowed}") from None

    return conv


def _str_list(at: _At) -> tuple[str, ...]:
    return tuple(_str(i) for i in at.items())


def _family_map(conv: Callable[[_At], T]) -> Callable[[_At], dict[Family, T]]:
    def parse(at: _At) -> dict[Family, T]:
        out: dict[Family, T] = {}
        for k in at.mapping():
            out[_enum(Family)(_At(at.file, f"{at.key}.{k}", k))] = conv(at.child(str(k)))
        return out

    return parse
