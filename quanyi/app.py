"""The composition root: builds the core, the HTTP app, the bot and the scheduler, and runs
them on one asyncio loop until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig

from quanyi.core.platform.config import Settings
from quanyi.core.platform.logs import configure_logging
from quanyi.core.platform.scheduler import Jobs, build_scheduler
from quanyi.core.sales.recharge import RechargeWorker
from quanyi.core.services import Core, build_core, open_checked
from quanyi.webhooks import create_app

log = logging.getLogger("quanyi")


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    configure_logging(settings)
    # Before serving anything: a schema that is behind, a missing or foreign key is refused.
    db, keyring = await open_checked(settings)
    core = build_core(settings, db=db, keyring=keyring)
    await core.platform.prepare_to_serve()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    bot_front = _BotFront(core) if settings.bot_token else None
    app = create_app(core, telegram_feed=bot_front.feed if bot_front and settings.bot_mode == "webhook" else None)
    jobs = Jobs(core)
    scheduler = build_scheduler(jobs)
    # Places paid recharges with their suppliers; without the bot too (payments arrive by HTTP).
    recharge_worker = RechargeWorker(core)
    recharge_task: asyncio.Task[None] | None = None

    http_config = HypercornConfig()
    http_config.bind = [f"{settings.http_host}:{settings.http_port}"]
    http_config.accesslog = None
    # Hypercorn's own lines through our logging (and its format), once, not also on its own stream.
    http_config.errorlog = logging.getLogger("hypercorn.error")
    http_config.graceful_timeout = 5
    http_task = asyncio.create_task(hypercorn_serve(app, http_config, shutdown_trigger=stop.wait))

    try:
        scheduler.start()
        await jobs.expire_orders()  # catch up on what expired while we were down
        recharge_task = asyncio.create_task(recharge_worker.run())
        if bot_front is not None:
            await bot_front.start()
        log.info(
            "quanyi serving on http://%s:%s (bot: %s, payment methods: %s)",
            settings.http_host,
            settings.http_port,
            settings.bot_mode if bot_front else "off",
            ", ".join(core.payments.names()) or "none",
        )
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({http_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        if http_task.done() and http_task.exception():
            raise http_task.exception()  # type: ignore[misc]
    finally:
        log.info("quanyi shutting down")
        scheduler.pause()  # no new runs; the ones in flight end before the scheduler goes
        await jobs.finish(within=10)
        scheduler.shutdown(wait=False)
        recharge_worker.stop()
        if recharge_task is not None:
            # A supplier call in flight is let finish (bounded by the supplier timeout); one cut
            # short is placed again under the same number by the next worker.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(recharge_task, timeout=settings.supplier_timeout_seconds + 5)
        if bot_front is not None:
            await bot_front.stop()
        with contextlib.suppress(Exception):
            await jobs.resign()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(http_task, timeout=10)
        await core.close()
    log.info("quanyi stopped")
    return 0


class _BotFront:
    """The bot, its dispatcher and the outbox sender, started and stopped together."""

    def __init__(self, core: Core) -> None:
        from quanyi.bot.outbox_sender import OutboxSender
        from quanyi.bot.runner import build_bot, build_dispatcher

        self.core = core
        self.bot = build_bot(core.settings)
        self.dp = build_dispatcher(core)
        self.sender = OutboxSender(core, self.bot)
        self._tasks: list[asyncio.Task[Any]] = []
        self._webhook_tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        from quanyi.bot.runner import set_commands

        settings = self.core.settings
        allowed = self.dp.resolve_used_update_types()
        try:
            await set_commands(self.bot)
        except Exception as exc:  # the shop still works without a command menu
            log.warning("could not set bot commands: %s", type(exc).__name__)
        if settings.bot_mode == "webhook":
            await self.bot.set_webhook(
                f"{settings.public_url}/telegram/webhook",
                secret_token=settings.bot_webhook_secret,
                allowed_updates=allowed,
            )
        else:
            self._tasks.append(
                asyncio.create_task(
                    self.dp.start_polling(
                        self.bot, handle_signals=False, close_bot_session=False, allowed_updates=allowed
                    )
                )
            )
        self._tasks.append(asyncio.create_task(self.sender.run()))

    async def feed(self, update: dict[str, Any]) -> None:
        # Answer Telegram at once; the update is handled in the background.
        task = asyncio.create_task(self.dp.feed_raw_update(self.bot, update))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def stop(self) -> None:
        self.sender.stop()
        if self.core.settings.bot_mode != "webhook":
            with contextlib.suppress(RuntimeError):
                await self.dp.stop_polling()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=15)
        if self._webhook_tasks:
            await asyncio.wait(self._webhook_tasks, timeout=10)
        # Polling hands each update to its own task, which stop_polling() does not wait for;
        # those updates are already confirmed to Telegram, so finish them before closing.
        polled: set[asyncio.Task[Any]] = set(getattr(self.dp, "_handle_update_tasks", ()))
        if polled:
            await asyncio.wait(polled, timeout=10)
        await self.bot.session.close()
