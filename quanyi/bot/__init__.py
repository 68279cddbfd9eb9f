"""The Telegram front (aiogram 3), grouped by audience: ``buyer`` (the shop, Stars), ``distributor``
(the /agent panel, withdrawal requests) and ``operator`` (the operator and staff chat, and the outbox
messages addressed to operators); shared here: filters, middlewares, callbacks, rendering, the
outbox sender and its renderer table, and ``runner``, which builds the dispatcher."""
