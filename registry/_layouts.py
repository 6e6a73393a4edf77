"""Parameter layouts of attention backends and the exact converters between them."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import attrs
from torch import Tensor

from quatrain import CheckpointLayoutError, PluginError

StateDict = Mapping[str, Tensor]
ConvertFn = Callable[[StateDict], dict[str, Tensor]]


@attrs.frozen
class Converter:
    """An exact map from one layout's attention parameters to another's, with its inverse."""

    source: str
    target: str
    forward: ConvertFn
    inverse: ConvertFn
    plugin: str


class LayoutGraph:
    """Layouts are nodes, converters are edges both ways; conversion follows the shortest path."""

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], tuple[ConvertFn, str]] = {}
        self._converters: list[Converter] = []
        self._declared: set[tuple[str, str]] = set()
        self.layouts: set[str] = set()

    def add_layout(self, layout: str) -> None:
        self.layouts.add(layout)

    def check(self, converters: Iterable[Converter]) -> None:
        """Raise PluginError if any of ``converters`` clashes with a registered one or with another."""
        seen = {key: plugin for key, (_, plugin) in self._edges.items() if key in self._declared}
        for converter in converters:
            key = (converter.source, converter.target)
            if key in seen:
                raise PluginError(
                    f"converter {converter.source} -> {converter.target} from {converter.plugin!r} "
                    f"clashes with the one from {seen[key]!r}"
                )
            seen[key] = converter.plugin

    def add(self, converter: Converter) -> None:
        self.check([converter])
        self._converters.append(converter)
        self._declared.add((converter.source, converter.target))
        self._edges[(converter.source, converter.target)] = (converter.forward, converter.plugin)
        self._edges.setdefault((converter.target, converter.source), (converter.inverse, converter.plugin))
        self.layouts |= {converter.source, converter.target}

    @property
    def converters(self) -> list[Converter]:
        return list(self._converters)

    def path(self, source: str, target: str) -> list[str]:
        """Layouts from ``source`` to ``target`` inclusive; raises if either is unknown or unreachable."""
        for layout in (source, target):
            if layout not in self.layouts:
                raise CheckpointLayoutError(
                    f"unknown layout {layout!r}; known layouts: {', '.join(sorted(self.layouts))}"
                )
        previous: dict[str, str | None] = {source: None}
        queue = deque([source])
        while queue:
            node = queue.popleft()
            if node == target:
                break
            for a, b in self._edges:
                if a == node and b not in previous:
                    previous[b] = node
                    queue.append(b)
        if target not in previous:
            raise CheckpointLayoutError(f"no conversion path from layout {source!r} to {target!r}")
        path = [target]
        while (prior := previous[path[-1]]) is not None:
            path.append(prior)
        return path[::-1]

    def convert(self, state: StateDict, source: str, target: str) -> dict[str, Tensor]:
        """Convert an attention state dict along the shortest path of converters."""
        path = self.path(source, target)
        out = dict(state)
        for a, b in itertools.pairwise(path):
            out = self._edges[(a, b)][0](out)
        return out
