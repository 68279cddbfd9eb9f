"""The Telegram front (aiogram 3): buyer chat, and the outbox sender."""
