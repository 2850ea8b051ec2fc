"""Outgoing e-mail over SMTP (the standard library's smtplib). Off unless MPM_SMTP_HOST is set."""
import smtplib
from email.message import EmailMessage

from flask import current_app

from mpm.plugins.credentials import scrub

TIMEOUT_SECONDS = 10


class MailNotSent(Exception):
    """The SMTP server could not be reached or refused the message; the text says why (no secrets)."""


def configured() -> bool:
    return bool(current_app.config.get("SMTP_HOST"))


def send_mail(to: str, subject: str, body: str) -> None:
    config = current_app.config
    message = EmailMessage()
    message["From"] = config.get("SMTP_FROM") or "mpm@localhost"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    security = (config.get("SMTP_SECURITY") or "starttls").lower()
    password = config.get("SMTP_PASSWORD") or ""
    try:
        smtp_class = smtplib.SMTP_SSL if security == "ssl" else smtplib.SMTP
        with smtp_class(config["SMTP_HOST"], int(config.get("SMTP_PORT") or 587), timeout=TIMEOUT_SECONDS) as smtp:
            if security == "starttls":
                smtp.starttls()
            if config.get("SMTP_USERNAME"):
                smtp.login(config["SMTP_USERNAME"], password)
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        raise MailNotSent(scrub(f"{type(exc).__name__}: {exc}", {"password": password})[:300]) from None
