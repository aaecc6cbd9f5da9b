"""Registries of task families and learners: the built-in ones, installed plugins, and classes registered at run time.

A package adds a family or a learner by naming its class under an entry-point group
(``metaopt.families`` / ``metaopt.learners``) in its own ``pyproject.toml``::

    [project.entry-points."metaopt.families"]
    shelves = "shelfdata.family:Shelves"

A job then uses it by that name. A plugin is imported the first time its name is
looked up, so a broken plugin costs only the jobs that use it, with one line naming it.
Nothing is ever imported from a path written in a job file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class PluginError(ValueError):
    """A plugin could not be imported, or is not what its group holds; ``str()`` is one line naming it."""


class Registry(Mapping[str, type[T]], Generic[T]):
    """Names to classes: built-ins first, then classes registered in this process, then installed plugins."""

    def __init__(self, group: str, builtins: dict[str, type[T]], base: type[T], what: str) -> None:
        self.group, self.base, self.what = group, base, what
        self._builtins = dict(builtins)
        self._registered: dict[str, type[T]] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, type[T]] = {}

    def plugins(self) -> dict[str, EntryPoint]:
        """The installed entry points of this group, by name (read once; ``refresh`` reads them again)."""
        if self._entry_points is None:
            found = {ep.name: ep for ep in entry_points(group=self.group)}
            self._entry_points = {name: ep for name, ep in found.items() if name not in self._builtins}
        return self._entry_points

    def refresh(self) -> None:
        """Forget the entry points read so far (after installing a package in this process)."""
        self._entry_points, self._loaded = None, {}

    def register(self, cls: type[T], name: str | None = None) -> type[T]:
        """Make ``cls`` known under ``name`` (default ``cls.name``) in this process; usable as a decorator."""
        name = name or getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"register: {cls.__name__} has no name; pass name=... or set the class attribute `name`")
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"register: {cls!r} is not a subclass of {self.base.__name__}")
        if name in self._builtins:
            raise ValueError(f"register: {name!r} is a built-in {self.what}; choose another name")
        self._registered[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a class registered in this process."""
        self._registered.pop(name, None)

    def origin(self, name: str) -> str:
        """Where ``name`` comes from: ``built-in``, ``registered`` or ``plugin <dist> <version>``."""
        if name in self._builtins:
            return "built-in"
        if name in self._registered:
            return "registered"
        ep = self.plugins()[name]
        return f"plugin {_distribution(ep)}"

    def __getitem__(self, name: str) -> type[T]:
        if name in self._builtins:
            return self._builtins[name]
        if name in self._registered:
            return self._registered[name]
        if name in self._loaded:
            return self._loaded[name]
        ep = self.plugins().get(name)
        if ep is None:
            raise KeyError(name)
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - any failure of a third-party import is the plugin's
            raise PluginError(f"plugin {self.what} {name!r} ({ep.value}, from {_distribution(ep)}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(f"plugin {self.what} {name!r} ({ep.value}, from {_distribution(ep)}) is not a subclass "
                              f"of {self.base.__name__}")
        self._loaded[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._builtins or name in self._registered or name in self.plugins()

    def __iter__(self) -> Iterator[str]:
        yield from self._builtins
        yield from (n for n in self._registered if n not in self._builtins)
        yield from (n for n in self.plugins() if n not in self._registered)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
