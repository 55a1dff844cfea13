"""What the open loop sends and when: a seeded Poisson arrival schedule over a weighted mix.

Pure functions, so a run is reproducible from its seed and the schedule is testable without a
server. The mix is what a field deployment sees: mostly ordinary phone photos, a few batches,
a few costly-but-valid files and a few hostile ones.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

# photo: 800x600 JPEG; phone: 4032x3024 JPEG; batch4: /v1/predict/batch with 4 photos;
# expensive: valid files that are costly to decode; hostile: files that must be refused.
DEFAULT_MIX: dict[str, float] = {
    "photo": 0.75,
    "phone": 0.10,
    "batch4": 0.05,
    "expensive": 0.05,
    "hostile": 0.05,
}
KINDS: tuple[str, ...] = tuple(DEFAULT_MIX)
# Single ordinary photos: the latency figures of "admitted ordinary photos" are theirs.
ORDINARY_PHOTO_KINDS: tuple[str, ...] = ("photo", "phone")
# A 4xx is a fair answer to these; to anything else (ordinary photos, batches) it is a violation.
BAD_INPUT_KINDS: frozenset[str] = frozenset({"expensive", "hostile"})


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float  # seconds after the start of the open loop
    kind: str
    pick: int  # which payload of that kind: payloads[pick % len(payloads)]


def normalise_mix(weights: dict[str, float]) -> dict[str, float]:
    """Weights -> fractions summing to 1, every kind of :data:`KINDS` present (0 when absent)."""
    unknown = sorted(set(weights) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {list(KINDS)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"mix weights must be >= 0, got {weights}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("mix weights sum to zero: nothing to send")
    return {kind: weights.get(kind, 0.0) / total for kind in KINDS}


def parse_mix(text: str) -> dict[str, float]:
    """``"photo=0.8,hostile=0.2"`` -> normalised fractions; kinds left out get 0."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected KIND=WEIGHT, got {item!r}")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weight of {kind!r} is not a number: {value!r}") from None
    return normalise_mix(weights)


def poisson_schedule(
    rate_per_s: float, duration_s: float, mix: dict[str, float], seed: int, max_count: int
) -> list[Arrival]:
    """Arrivals of a Poisson process of ``rate_per_s`` over ``duration_s``, kinds drawn by ``mix``.

    Bounded by ``max_count`` whatever the rate, so a mistyped rate cannot build a list that
    exhausts memory.
    """
    if rate_per_s <= 0:
        raise ValueError(f"rate must be > 0, got {rate_per_s}")
    rng = random.Random(seed)
    kinds = [k for k, w in mix.items() if w > 0]
    cum = list(itertools.accumulate(mix[k] for k in kinds))
    arrivals: list[Arrival] = []
    t = 0.0
    while len(arrivals) < max_count:
        t += rng.expovariate(rate_per_s)
        if t >= duration_s:
            break
        kind = rng.choices(kinds, cum_weights=cum)[0]
        arrivals.append(Arrival(t, kind, rng.randrange(1 << 30)))
    return arrivals


def kind_counts(arrivals: list[Arrival]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for a in arrivals:
        counts[a.kind] += 1
    return counts
