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
    # The placement token, one per showing of the methods: a repeated tap is the same order.
    key: str


class CancelCb(CallbackData, prefix="c"):
    number: str


class CodesCb(CallbackData, prefix="o"):
    number: str


class PricingCb(CallbackData, prefix="pz"):
    view: str  # home | coupons | promotions | bundles


class CouponCb(CallbackData, prefix="cp"):
    id: int
    n: int
    remove: bool = False  # False: ask for a code; True: drop the one in the form


class CategoryCb(CallbackData, prefix="cg"):
    key: str  # a short hash of the category's name: a name may be too long for 64 bytes


class SupportCb(CallbackData, prefix="sp"):
    act: str  # home: the support screen | write: pick the order, then type | reply: answer on a ticket
    ticket: int = 0


class SupportOrderCb(CallbackData, prefix="so"):
    number: str  # the order the request is about; "-" = none


class PayCb(CallbackData, prefix="pay"):
    """Pay an unpaid order from /orders: its pay link or invoice again, never a new order."""

    number: str


class ListCancelCb(CallbackData, prefix="lc"):
    """Cancel an unpaid order from /orders (or /cancel's question): the list is shown again."""

    number: str
