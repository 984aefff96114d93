"""Attribute combinations held out of training: the world's test of composition.

A model that has seen red squares and blue circles but never a red circle, and draws one when asked, has
composed "red" and "circle" rather than memorised pairs. `world.sample_scene(rng, holdout=[("red",
"circle")])` never draws the held-out combinations; rendering the caption "a red circle" afterwards asks
for exactly what training never showed.

    rules([("red", "circle"), {"size": "large", "motion": "left"}], attributes)
        -> ((("color", "red"), ("shape", "circle")), (("motion", "left"), ("size", "large")))
    allowed(holdout, attributes) -> (M, 4) index rows of (shape, color, size, motion) still drawn
"""

from __future__ import annotations

import functools
import itertools

import numpy as np


def rules(holdout, attributes: dict[str, tuple[str, ...]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """("red", "circle") or {"color": "red", "shape": "circle"} -> (("color", "red"), ("shape", "circle"))."""
    kind_of = {value: kind for kind, values in attributes.items() for value in values}
    found = []
    for combo in holdout:
        if isinstance(combo, dict):
            pairs = list(combo.items())
        else:
            values = (combo,) if isinstance(combo, str) else tuple(combo)
            unknown = [v for v in values if v not in kind_of]
            if unknown:
                raise ValueError(f"holdout {combo!r}: unknown words {unknown}; use shapes, colours, sizes or "
                                 f"motions from {sorted(kind_of)}")
            pairs = [(kind_of[v], v) for v in values]
        for kind, value in pairs:
            if value not in attributes.get(kind, ()):
                raise ValueError(f"holdout {combo!r}: {kind}={value!r} is not valid; keys are "
                                 f"{list(attributes)} with values {attributes}")
        found.append(tuple(sorted(pairs)))
    return tuple(sorted(set(found)))


def allowed(holdout, attributes: dict[str, tuple[str, ...]]) -> np.ndarray:
    """All (shape, color, size, motion) index rows that no holdout rule matches: (M, len(attributes)) int."""
    return _allowed(rules(holdout, attributes), tuple(attributes.items()))


@functools.lru_cache(maxsize=32)
def _allowed(held: tuple, attributes: tuple[tuple[str, tuple[str, ...]], ...]) -> np.ndarray:
    names, values = [name for name, _ in attributes], [v for _, v in attributes]
    rows = [idx for idx in itertools.product(*(range(len(v)) for v in values))
            if not any(all(values[names.index(k)][idx[names.index(k)]] == v for k, v in rule) for rule in held)]
    return np.array(rows, dtype=np.int64).reshape(-1, len(names))
