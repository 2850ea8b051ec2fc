"""MPM's bracket placeholders, rendered per recipient: "Dear [name] [surname], ..."."""
import re

from mpm.messaging.send import SmsRefused

PLACEHOLDERS = {
    "name": "first name",
    "surname": "surname",
    "mini_grid": "mini-grid",
    "group": "customer group",
    "type": "customer type",
    "phone": "primary number",
}
# A word in brackets is a placeholder; other bracketed text ("[see notice]") stays as written.
_TOKEN = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*)\]")


class UnknownPlaceholder(SmsRefused):
    pass


def used(template: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(template)]


def check(template: str) -> None:
    """Refuse before anything is stored: name every placeholder we cannot fill."""
    unknown = sorted({p for p in used(template) if p.lower() not in PLACEHOLDERS})
    if unknown:
        listed = ", ".join(f"[{p}]" for p in unknown)
        known = ", ".join(f"[{p}]" for p in PLACEHOLDERS)
        noun = "placeholder" if len(unknown) == 1 else "placeholders"
        raise UnknownPlaceholder(f"Unknown {noun} {listed}. You can use {known}.")


def has_placeholders(template: str) -> bool:
    return any(p.lower() in PLACEHOLDERS for p in used(template))


def render(template: str, values: dict) -> str:
    return _TOKEN.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), template)
