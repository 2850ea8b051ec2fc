"""The company's time zone: every time a person reads (pages, CSV rows, CSV file names) is shown
in it and labelled with the zone's abbreviation ("2026-11-27 03:40 EAT"). Stored times are UTC."""
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mpm.models.base import as_utc

FORMATS = {
    "minutes": "%Y-%m-%d %H:%M",
    "seconds": "%Y-%m-%d %H:%M:%S",
    "date": "%Y-%m-%d",
    "clock": "%H:%M",
    "filename": "%Y%m%d-%H%M%S",
}


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def zone_label(moment: datetime, tz: ZoneInfo) -> str:
    """'EAT' for Africa/Nairobi; zones without an abbreviation read '+03' or 'UTC'."""
    return as_utc(moment).astimezone(tz).tzname() or tz.key


def local_text(moment: datetime | None, tz: ZoneInfo, precision: str = "minutes", label: bool = True) -> str:
    """A stored UTC time as the company's wall-clock time, with the zone named unless label=False."""
    if moment is None:
        return ""
    text = as_utc(moment).astimezone(tz).strftime(FORMATS[precision])
    if not label or precision in ("filename", "date"):  # a day needs no zone name
        return text
    return f"{text} {zone_label(moment, tz)}"
