"""Operator chat: ``/help`` lists the operator's commands (buyers keep the buyer's help)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from quanyi.bot.filters import IsAdmin
from quanyi.i18n import t


def build_help_router() -> Router:
    router = Router(name="operator_help")
    router.message.filter(IsAdmin())
    router.message.register(operator_help, Command("help"))
    return router


async def operator_help(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "phoneops.help"))
