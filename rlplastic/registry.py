"""One way to build every configured object: a registry of classes by config name, signature-checked.

Augmentations, RR controllers, triggers, interventions and regularizers each have a :class:`Registry`.
A class registers under its config name (``@INTERVENTIONS.register("redo")``); :meth:`Registry.build`
checks a config mapping against the class's ``__init__`` signature before calling it, so a typo or a
missing key is one error naming the config key and what is allowed — never a ``TypeError`` from deep
inside. Adding a component is its class, its ``register`` line and its YAML file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "named_errors", "plain"]

T = TypeVar("T")


def plain(value: Any) -> Any:
    """Hydra's ``ListConfig``/``DictConfig`` (and tuples) as plain lists/dicts, recursively."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Iterable):
        return [plain(item) for item in value]
    return value


@contextmanager
def named_errors(prefix: str) -> Iterator[None]:
    """Prefix a ``ValueError`` raised in the block with the config key it came from (``intervention.redo: …``).

    Messages that already start with ``prefix``'s first part (they name the key themselves) pass unchanged.
    """
    try:
        yield
    except ValueError as err:
        if str(err).startswith(prefix.split(".", 1)[0]):
            raise
        raise ValueError(f"{prefix}: {err}") from None


class Registry(Generic[T]):
    """Classes (or factories) of one kind by config name.

    Args:
        kind: what the entries are, for messages (``"intervention"``).
        key: the config key that selects them (``"intervention"``, ``"rr"``, ``"aug"``), the prefix of
            every message.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register the class (or factory) under ``name``."""

        def add(entry: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        """The entry registered as ``name``; an unknown name is a ``ValueError`` naming the config key and listing
        the known names (``unknown aug 'crop': allowed are ['none', 'shift']``)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.key} {name!r}: allowed are {list(self._entries)}")
        return self._entries[name]

    def keys(self, name: str, context: Iterable[str] = ()) -> tuple[str, ...]:
        """The config keys ``name`` accepts: its constructor's parameters other than ``context``."""
        skip = {"self", *context}
        params = inspect.signature(self.get(name)).parameters.values()
        return tuple(p.name for p in params if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def check(self, name: str, settings: Mapping[str, Any], context: Iterable[str] = ()) -> None:
        """Refuse keys the constructor does not take and required keys that are missing."""
        context = tuple(context)
        allowed = self.keys(name, context)
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise ValueError(f"unknown {self.key}.{name} key(s) {unknown}: allowed are {list(allowed)}")
        params = inspect.signature(self.get(name)).parameters
        missing = [
            key for key in allowed
            if params[key].default is inspect.Parameter.empty and key not in settings
        ]  # fmt: skip
        if missing:
            raise ValueError(f"{self.key}.{name} needs key(s) {missing}")

    def build(self, name: str, settings: Mapping[str, Any] | None = None, **context: Any) -> T:
        """``entry(**context, **settings)`` after :meth:`check`; its ``ValueError``s are prefixed ``<key>.<name>:``.

        Args:
            name: the config name.
            settings: the config mapping (Hydra containers are turned into plain lists and dicts).
            context: arguments the framework supplies (the agent, the monitor, ...), not config keys.
        """
        settings = plain(dict(settings or {}))
        self.check(name, settings, context)
        with named_errors(f"{self.key}.{name}"):
            return self._entries[name](**context, **settings)
