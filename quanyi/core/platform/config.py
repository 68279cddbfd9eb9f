"""Settings read from QUANYI_* environment variables and an optional .env file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TELEGRAM_API = "https://api.telegram.org"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUANYI_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")
    database_url: str = ""

    bot_token: str = ""
    telegram_api_base: str = DEFAULT_TELEGRAM_API
    # "polling" (default) or "webhook" (updates arrive at POST /telegram/webhook).
    bot_mode: str = "polling"
    bot_webhook_secret: str = ""
    admin_ids: str = ""
    # Staff who may verify and consume redemption links in chat (核销), besides the operators.
    staff_ids: str = ""
    # Redis for the bot's conversation state (FSM) when set, e.g. redis://127.0.0.1:6379/0.
    redis_url: str = ""
    support_contact: str = ""
    # A notice shown above the bot's catalogue (opening hours, a holiday, a new product), plain
    # text; English-speaking buyers see shop_notice_en instead when it is set. Empty = none.
    shop_notice: str = Field(default="", max_length=1000)
    shop_notice_en: str = Field(default="", max_length=1000)

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"

    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"

    reservation_minutes: int = Field(default=15, ge=1)
    expiry_job_seconds: int = Field(default=30, ge=1)
    max_quantity: int = Field(default=20, ge=1)

    sandbox_pay: bool = False
    sandbox_secret: str = ""

    epay_gateway: str = ""
    epay_pid: str = ""
    epay_key: str = ""
    epay_types: str = "alipay,wxpay"
    # "plain": sign = md5(k=v&...KEY) as CONTRACT says; "amp_key": md5(k=v&...&key=KEY).
    epay_sign_style: str = "plain"
    # Ask the gateway (api.php?act=order) about orders still pending this long after creation.
    epay_query_after_minutes: int = Field(default=3, ge=1)
    payment_query_job_seconds: int = Field(default=60, ge=5)
    stock_alert_job_seconds: int = Field(default=60, ge=5)

    # Distributors: how many levels deep the network may grow, how long an invite lasts,
    # and the bot's @username for the invite and referral links the CLI prints.
    max_distributor_depth: int = Field(default=3, ge=1, le=100)
    invite_hours: int = Field(default=72, ge=1, le=720)
    # Each distributor is sent one summary of its customers' paid orders this often (0: never).
    distributor_digest_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)
    bot_username: str = ""

    # Direct recharge through a supplier speaking the generic signed JSON protocol
    # (docs/suppliers.md); URL and secret both set = the supplier named "generic" is enabled.
    supplier_generic_url: str = ""
    supplier_generic_secret: str = ""
    supplier_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # The recharge worker: placements tried this many times (backing off from
    # recharge_retry_seconds) before the recharge fails; recharges still processing are
    # re-queried after recharge_query_after_seconds and failed ("timed out") after
    # recharge_give_up_minutes from payment.
    recharge_max_attempts: int = Field(default=5, ge=1, le=50)
    recharge_retry_seconds: float = Field(default=30.0, gt=0, le=3600)
    recharge_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    recharge_query_after_seconds: int = Field(default=120, ge=1)
    recharge_give_up_minutes: int = Field(default=60, ge=1)
    recharge_job_seconds: int = Field(default=30, ge=1)
    # How often partners' webhook events are looked for and sent (retries keep their backoff).
    partner_webhook_job_seconds: int = Field(default=10, ge=1)

    # Redemption link pages (/r/<token>): lookups per client IP per minute, pages, QR
    # images and confirmations together, so tokens cannot be guessed by brute force.
    redeem_lookups_per_minute: int = Field(default=30, ge=1)
    # Addresses of reverse proxies in front of quanyi (comma-separated). A request from one
    # of them is attributed to the client named in its X-Forwarded-For header, so the
    # per-IP limits count real clients, not the proxy. Empty = trust no header.
    trusted_proxies: str = ""
    # Abuse limits at the edges: requests per client IP per minute to the payment and
    # supplier callbacks and the partner API; chat messages and button presses per user
    # in any chat_window_seconds (operators are exempt); the largest stock file imported.
    # On the callbacks (/pay/ notify and webhooks, /recharge/) only requests that fail
    # verification count, and only they are ever refused: a gateway's burst of genuine
    # notifies is never throttled. On /api/v1/ every request counts. One window per client IP.
    callback_requests_per_minute: int = Field(default=120, ge=1)
    # Public pages (the catalogue /, the sandbox pay pages, /pay/return/): requests per
    # client IP per minute, so one client cannot hog the server (the /r/ pages have their own).
    page_requests_per_minute: int = Field(default=120, ge=1)
    # The web console (/admin): a session ends after this long without a request, and in any
    # case this long after sign-in; a one-time sign-in link lasts login_link_minutes.
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    console_session_hours: int = Field(default=12, ge=1, le=24 * 30)
    login_link_minutes: int = Field(default=5, ge=1, le=60)
    chat_events_per_window: int = Field(default=20, ge=1)
    chat_window_seconds: int = Field(default=10, ge=1)
    max_stock_file_mb: int = Field(default=200, ge=1)

    # Telegram Stars: on when the bot runs, unless QUANYI_STARS_ENABLED=0.
    stars_enabled: bool = True
    # Stars per 1.00 of the product currency (decimal text), for products without a Stars price.
    stars_rate: str = "7"

    cryptobot_token: str = ""
    cryptobot_api_base: str = "https://pay.crypt.bot"

    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = "https://api.stripe.com"
    # What each payment method keeps of a payment, posted to the ledger as a fee:
    # "epay=0.6%,stripe=2.9%+30" (the fixed part in minor units). Empty = no fees.
    provider_fees: str = ""

    # Card-key encryption. Unset = a key file under data_dir, created 0600 only for a database
    # that holds no ciphertext (`quanyi db upgrade` on a new database, `quanyi keys init`).
    # QUANYI_CARD_KEYS="k1:<base64 32 bytes>,k2:<...>", QUANYI_CARD_KEY_ACTIVE="k2",
    # QUANYI_LOOKUP_KEY="<base64 32 bytes>" (HMAC key for duplicate detection),
    # QUANYI_AUDIT_KEY="<base64 32 bytes>" (HMAC key of the audit chain; unset = derived from
    # the lookup key). Never stored in the database.
    card_keys: str = ""
    card_key_active: str = ""
    lookup_key: str = ""
    audit_key: str = ""

    outbox_rate_per_second: float = Field(default=25.0, gt=0)
    outbox_per_chat_interval: float = Field(default=1.0, ge=0)
    # Daily settlement: pending commissions become available this many days after their
    # order was paid; the job looks for closed days to settle this often.
    commission_confirm_days: int = Field(default=7, ge=0, le=365)
    settle_job_seconds: int = Field(default=300, ge=10)
    log_level: str = "INFO"
    # Operators hear of paid orders: each one (within seconds), a digest every
    # operator_digest_minutes, or not at all. Failed orders are always told.
    operator_order_notice: str = "each"
    operator_digest_minutes: int = Field(default=60, ge=1, le=1440)

    @field_validator("public_url", "telegram_api_base", "epay_gateway", "cryptobot_api_base", "stripe_api_base")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("operator_order_notice")
    @classmethod
    def _notice_mode(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("each", "digest", "off"):
            raise ValueError("each, digest or off")
        return value

    @field_validator("staff_ids")
    @classmethod
    def _digit_ids(cls, value: str) -> str:
        # Checked at start-up: a typo here would otherwise fail every chat message later.
        parts = [part for part in value.replace(" ", "").split(",") if part]
        if not all(part.isdigit() for part in parts):
            raise ValueError("a comma-separated list of Telegram user ids")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'quanyi.db').resolve()}"

    @property
    def trusted_proxy_list(self) -> set[str]:
        return {part.strip() for part in self.trusted_proxies.split(",") if part.strip()}

    @property
    def admin_id_list(self) -> list[int]:
        return [int(part) for part in self.admin_ids.replace(" ", "").split(",") if part]

    @property
    def staff_id_list(self) -> list[int]:
        return [int(part) for part in self.staff_ids.replace(" ", "").split(",") if part]

    @property
    def epay_enabled(self) -> bool:
        return bool(self.epay_gateway and self.epay_pid and self.epay_key)

    @property
    def epay_type_list(self) -> list[str]:
        return [part.strip() for part in self.epay_types.split(",") if part.strip()]
