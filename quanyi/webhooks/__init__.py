"""The HTTP front: payment callbacks, pay pages, health, and the Telegram webhook."""

from quanyi.webhooks.app import create_app

__all__ = ["create_app"]
