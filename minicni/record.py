"""`Record`: a plain value class (equality, hash and repr from its `__slots__`).

The plugin imports its value classes on every pod start: a `@dataclass` executes generated code
when its module loads (~1 ms each, and dataclasses imports inspect), a `NamedTuple` needs typing
(~3 ms). A Record subclass names its fields in `__slots__` and sets them in a typed `__init__`;
treat instances as immutable.
"""

from __future__ import annotations


class Record:
    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"
