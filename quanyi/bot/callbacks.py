"""Callback data of inline buttons. Products travel by id: SKUs may be too long for 64 bytes."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class CatalogueCb(CallbackData, prefix="cat"):
    pass


class ProductCb(CallbackData, prefix="p"):
    id: int


class QuantityCb(CallbackData, prefix="q"):
    id: int
    n: int  # 0 = ask for another quantity


class MethodCb(CallbackData, prefix="m"):
    id: int
    n: int
    method: str
    option: str


class CancelCb(CallbackData, prefix="c"):
    number: str


class CodesCb(CallbackData, prefix="o"):
    number: str
