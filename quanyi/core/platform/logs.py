"""Logging set-up with a filter that scrubs configured secrets from every record."""

from __future__ import annotations

import logging
import re

from quanyi.core.platform.config import Settings

_TOKEN_IN_URL = re.compile(r"/bot\d+:[A-Za-z0-9_-]+")


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        # A traceback quotes exception texts (an HTTP error with the bot URL in it): format
        # it here, scrubbed, so the handler's formatter uses this text instead.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        return True

    def clean(self, text: str) -> str:
        cleaned = _TOKEN_IN_URL.sub("/bot<redacted>", text)
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "<redacted>")
        return cleaned


def secrets_of(settings: Settings) -> list[str]:
    return [
        settings.bot_token,
        settings.epay_key,
        settings.bot_webhook_secret,
        settings.sandbox_secret,
        settings.lookup_key,
        *[part.partition(":")[2] for part in settings.card_keys.split(",")],
    ]


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets_of(settings)))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    # The schema check at start-up runs alembic, whose INFO lines say nothing an operator needs.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler logs a line per job added at start-up and two per job run (every 10 s for
    # partner webhooks): noise that hides what matters. Jobs log their own outcomes and a failed
    # run is still logged as an error; QUANYI_LOG_LEVEL=DEBUG shows the scheduler's lines again.
    verbose = root.getEffectiveLevel() <= logging.DEBUG
    logging.getLogger("apscheduler").setLevel(logging.NOTSET if verbose else logging.WARNING)
