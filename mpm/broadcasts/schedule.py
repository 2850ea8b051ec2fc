"""When a broadcast may send: a start time typed in the company's time zone, and quiet hours
(local clock times, possibly across midnight) during which nothing is handed to a gateway."""
from datetime import date, datetime, time, timedelta, timezone

from mpm.company_time import zone
from mpm.models.base import as_utc


class ScheduleError(ValueError):
    pass


def parse_local(text: str, tz_name: str) -> datetime:
    """'2026-12-01T08:30' typed in the company time zone → aware UTC datetime."""
    try:
        local = datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise ScheduleError("Pick a date and time for the broadcast.") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone(tz_name))
    return local.astimezone(timezone.utc)


def parse_clock(text: str) -> str:
    try:
        return time.fromisoformat((text or "").strip()).strftime("%H:%M")
    except ValueError:
        raise ScheduleError("Quiet hours need a start and an end time, such as 21:00 and 07:00.") from None


def quiet_hours(start: str, end: str) -> dict:
    start, end = parse_clock(start), parse_clock(end)
    if start == end:
        raise ScheduleError("Quiet hours must start and end at different times.")
    return {"start": start, "end": end}


def quiet_until(moment: datetime, quiet: dict | None, tz_name: str) -> datetime | None:
    """If `moment` falls inside the quiet hours, the UTC time they end; else None."""
    if not quiet:
        return None
    tz = zone(tz_name)
    local = as_utc(moment).astimezone(tz)
    start, end = time.fromisoformat(quiet["start"]), time.fromisoformat(quiet["end"])
    now = local.time().replace(tzinfo=None)
    today: date = local.date()
    if start < end:  # e.g. 13:00–14:00, same day
        inside, end_day = start <= now < end, today
    else:  # e.g. 21:00–07:00, across midnight
        inside = now >= start or now < end
        end_day = today + timedelta(days=1) if now >= start else today
    if not inside:
        return None
    return datetime.combine(end_day, end, tzinfo=tz).astimezone(timezone.utc)


def local_text(moment: datetime | None, tz_name: str) -> str:
    if moment is None:
        return ""
    return as_utc(moment).astimezone(zone(tz_name)).strftime("%Y-%m-%d %H:%M")
