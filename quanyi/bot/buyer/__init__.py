"""Buyer chat: the shop (catalogue, order form, orders and codes) and Telegram Stars."""
