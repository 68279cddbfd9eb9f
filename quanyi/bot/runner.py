"""Building the bot and its dispatcher, in polling or webhook mode."""

from __future__ import annotations

import asyncio

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import BotCommand

from quanyi.bot.buyer.shop import build_router
from quanyi.bot.buyer.stars import build_stars_router
from quanyi.bot.buyer.support import build_support_router
from quanyi.bot.distributor.agent import build_agent_router
from quanyi.bot.distributor.quota import build_quota_router
from quanyi.bot.distributor.withdraw import build_withdraw_router
from quanyi.bot.middlewares import AuditMiddleware, LanguageMiddleware
from quanyi.bot.operator.admin import build_admin_router
from quanyi.bot.operator.audit import build_audit_router
from quanyi.bot.operator.help import build_help_router
from quanyi.bot.operator.login import build_login_router, build_role_refusal_router
from quanyi.bot.operator.manual import build_manual_router
from quanyi.bot.operator.ops import build_ops_router
from quanyi.bot.operator.partners import build_partners_router
from quanyi.bot.operator.pricing import build_pricing_ops_router
from quanyi.bot.operator.products import build_products_router
from quanyi.bot.operator.reconcile import build_reconcile_router
from quanyi.bot.operator.reports import build_reports_router
from quanyi.bot.operator.risk import build_risk_router
from quanyi.bot.operator.stock_files import build_stock_files_router
from quanyi.bot.operator.support import build_support_ops_router
from quanyi.bot.operator.verify import build_verify_router
from quanyi.bot.operator.withdrawals import build_withdrawals_router
from quanyi.bot.throttle import ThrottleMiddleware
from quanyi.core.platform.config import DEFAULT_TELEGRAM_API, Settings
from quanyi.core.services import Core


def build_bot(settings: Settings) -> Bot:
    # A bounded request time keeps an outbox send well inside its claim lease.
    session = AiohttpSession(timeout=30)
    if settings.telegram_api_base and settings.telegram_api_base != DEFAULT_TELEGRAM_API:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_base), timeout=30)
    return Bot(
        token=settings.bot_token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def build_storage(settings: Settings) -> BaseStorage:
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        return RedisStorage.from_url(settings.redis_url)
    return MemoryStorage()


def build_dispatcher(core: Core) -> Dispatcher:
    dp = Dispatcher(storage=build_storage(core.settings))
    dp["core"] = core
    # Checking a confirmation and using it up must be one step, or a double tap buys / asks twice.
    dp["agent_confirming"] = asyncio.Lock()  # quanyi.bot.distributor.agent: bulk purchases
    dp["withdraw_confirming"] = asyncio.Lock()  # quanyi.bot.distributor.withdraw: withdrawal requests
    dp.update.outer_middleware(LanguageMiddleware())
    # Operators' and distributors' commands and button presses go on the audit trail.
    dp.message.outer_middleware(AuditMiddleware())
    dp.callback_query.outer_middleware(AuditMiddleware())
    dp.include_router(build_audit_router())  # operators: /audit
    admins = set(core.settings.admin_id_list)
    dp.update.outer_middleware(
        ThrottleMiddleware(
            core.settings.chat_events_per_window,
            core.settings.chat_window_seconds,
            admins.__contains__,
            redis_url=core.settings.redis_url,
        )
    )
    dp.include_router(build_stars_router())  # first: a payment message must never reach a catch-all
    dp.include_router(build_admin_router())  # before the shop: its catch-all answers everyone else
    dp.include_router(build_support_ops_router())  # operators: /tickets, replies to buyers' tickets
    dp.include_router(build_ops_router())
    dp.include_router(build_help_router())  # operators: /help lists their commands (buyers: the shop's)
    dp.include_router(build_login_router())  # staff: /login, a one-time link to the web console
    dp.include_router(build_products_router())  # operators: /products, /product, /product_add
    dp.include_router(build_stock_files_router())  # operators: a stock file captioned /import or /void
    dp.include_router(build_reconcile_router())  # operators: provider statements
    dp.include_router(build_pricing_ops_router())
    dp.include_router(build_reports_router())  # operators: /report, its exports
    dp.include_router(build_risk_router())  # operators: /risk, /block, /decisions, holds' approve / reject
    dp.include_router(build_partners_router())  # operators: /partners, /partner_new, keys, top-ups, webhooks
    dp.include_router(build_verify_router())  # operators and staff: codes and /r/ links (核销)
    dp.include_router(build_agent_router())  # before the shop too: /start inv_..., /agent, its forms
    dp.include_router(build_quota_router())  # distributors: quota passed to a sub-distributor
    dp.include_router(build_withdrawals_router())  # operators: /withdrawals, approve / reject
    dp.include_router(build_withdraw_router())  # distributors: /withdraw, its form
    dp.include_router(build_manual_router())  # operators: /queue, take / done / can't do manual orders
    dp.include_router(build_support_router())  # buyers: /support, pleas for a human, the ticket form
    dp.include_router(build_role_refusal_router())  # staff: an operator command their role may not use
    dp.include_router(build_router())
    return dp


async def set_commands(bot: Bot) -> None:
    for lang, texts in (
        ("zh", ("浏览商品", "我的订单", "帮助", "支付问题", "联系客服")),
        ("en", ("Browse products", "My orders", "Help", "Payment support", "Contact support")),
    ):
        commands = [
            BotCommand(command="start", description=texts[0]),
            BotCommand(command="orders", description=texts[1]),
            BotCommand(command="help", description=texts[2]),
            BotCommand(command="paysupport", description=texts[3]),
            BotCommand(command="support", description=texts[4]),
        ]
        await bot.set_my_commands(commands, language_code=lang)
    await bot.set_my_commands(
        [
            BotCommand(command="start", description="浏览商品 / Browse"),
            BotCommand(command="orders", description="我的订单 / My orders"),
            BotCommand(command="help", description="帮助 / Help"),
            BotCommand(command="paysupport", description="支付问题 / Payment support"),
            BotCommand(command="support", description="联系客服 / Contact support"),
        ]
    )
