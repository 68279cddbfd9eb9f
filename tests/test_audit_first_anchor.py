"""An installation upgraded from before the keyed audit chain is anchored at once by `quanyi db
upgrade`, so the window in which an unkeyed rewrite of the whole chain goes unnoticed closes."""

from __future__ import annotations

import json

from quanyi.core.platform.audit_chain import anchors_path
from tests.test_cli import LocalCli


def test_db_upgrade_verifies_and_anchors_a_chain_that_was_never_anchored_once(tmp_path):
    cli = LocalCli(tmp_path)
    assert "anchored" not in cli.ok("db", "upgrade")  # a new database: nothing to anchor
    cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    path = anchors_path(cli.data_dir)
    assert not path.exists()

    out = cli.ok("db", "upgrade")
    assert "verified and anchored for the first time" in out
    pinned = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(pinned) == 1 and pinned[0]["seq"] >= 1
    assert "anchored" not in cli.ok("db", "upgrade")  # once
    assert "; 1 anchor held" in cli.ok("audit", "verify")
