"""`quanyi serve` refuses to start with an enabled payment method whose secret is empty or a placeholder."""

from __future__ import annotations

import pytest

from tests.test_cli import cli  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    "env, named",
    [
        (
            {"QUANYI_EPAY_GATEWAY": "https://pay.example", "QUANYI_EPAY_PID": "1001", "QUANYI_EPAY_KEY": "changeme"},
            "QUANYI_EPAY_KEY",
        ),
        ({"QUANYI_EPAY_GATEWAY": "https://pay.example", "QUANYI_EPAY_PID": "1001"}, "EPay needs"),
        ({"QUANYI_CRYPTOBOT_TOKEN": "secret"}, "QUANYI_CRYPTOBOT_TOKEN"),
        ({"QUANYI_STRIPE_SECRET_KEY": "sk_live_0123456789abcdef"}, "QUANYI_STRIPE_WEBHOOK_SECRET"),
        (
            {"QUANYI_STRIPE_SECRET_KEY": "xxx", "QUANYI_STRIPE_WEBHOOK_SECRET": "whsec_0123456789abcdef"},
            "QUANYI_STRIPE_SECRET_KEY",
        ),
    ],
)
def test_serve_refuses_a_payment_method_without_a_real_secret(cli, env, named):
    cli.ok("db", "upgrade")
    cli.env.update(env)
    cli.env["QUANYI_HTTP_PORT"] = "1"  # never reached: the check comes first
    reason = cli.fails("serve")
    assert named in reason
