"""How many characters, which encoding and how many SMS segments a body costs.

GSM-7 (GSM 03.38, via the gsm0338 codec): 160 septets in one SMS, 153 per part when
concatenated; extension characters ({ } [ ] ~ \\ | ^ €) take two septets and are never split.
One character outside GSM-7 switches the whole message to UCS-2: 70 UTF-16 units in one SMS,
67 per part, a surrogate pair (emoji) never split.
"""
from dataclasses import dataclass
from functools import lru_cache

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM7 = "GSM-7"
UCS2 = "UCS-2"


@dataclass(frozen=True)
class BodyInfo:
    characters: int
    encoding: str
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    per_segment: int  # capacity of one part at this length

    @property
    def remaining_in_segment(self) -> int:
        return self.segments * self.per_segment - self.units if self.segments else self.per_segment


@lru_cache(maxsize=512)
def _gsm_septets(char: str) -> int | None:
    try:
        return len(char.encode("gsm03.38"))
    except UnicodeEncodeError:
        return None


def _pack(unit_sizes: list[int], single: int, multi: int) -> tuple[int, int]:
    """(segments, capacity per segment): fill parts without splitting a character."""
    total = sum(unit_sizes)
    if total == 0:
        return 0, single
    if total <= single:
        return 1, single
    segments, used = 1, 0
    for size in unit_sizes:
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return segments, multi


def analyse(body: str) -> BodyInfo:
    septets = [_gsm_septets(c) for c in body]
    if all(s is not None for s in septets):
        segments, per = _pack(septets, 160, 153)
        return BodyInfo(len(body), GSM7, segments, sum(septets), per)
    units = [len(c.encode("utf-16-le")) // 2 for c in body]
    segments, per = _pack(units, 70, 67)
    return BodyInfo(len(body), UCS2, segments, sum(units), per)
