"""Outgoing mail (password resets, invitations) over the SMTP server of ``MTDESK_SMTP_*``.

:func:`send_mail` hands one plain-text message to the server (STARTTLS when configured,
then LOGIN when a user name is set) from a worker thread, so the event loop never waits
on the network. Without ``MTDESK_SMTP_HOST`` it raises :class:`ConfigError` naming it.
Nothing here logs a recipient's link or the message body.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
from email.message import EmailMessage

from mtdesk.core.errors import ConfigError, StoreUnavailable
from mtdesk.core.settings import Settings, SmtpConfig

log = logging.getLogger(__name__)
TIMEOUT_S = 15.0


def _send(config: SmtpConfig, message: EmailMessage) -> None:
    with smtplib.SMTP(config.host, config.port, timeout=TIMEOUT_S) as smtp:
        if config.starttls:
            smtp.starttls()
        if config.username:
            smtp.login(config.username, config.password.reveal() if config.password else "")
        smtp.send_message(message)


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    config = settings.accounts.smtp
    if config is None:
        raise ConfigError("MTDESK_SMTP_HOST", "is required to send password-reset and "
                                              "invitation mail")
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    try:
        await asyncio.to_thread(_send, config, message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail not sent: SMTP %s:%d: %s", config.host, config.port,
                    type(exc).__name__)
        raise StoreUnavailable("the mail server did not take the message; retry") from exc
