"""The approval loop's commands as an operator meets them: migrate, tokens, audit verify, on each backend."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, text

from approvals import audit, tokens
from approvals.db import open_database


def _riskroute(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RISKROUTE_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "serving", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_serve_refuses_an_unmigrated_database_and_says_how_to_fix_it(database_url):
    refused = _riskroute("serve", url=database_url)
    assert refused.returncode == 2 and "riskroute db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_migrated_database_seeds_the_ruleset_issues_tokens_and_verifies_its_audit_chain(database_url):
    upgraded = _riskroute("db", "upgrade", url=database_url)
    assert upgraded.returncode == 0 and "active ruleset: version 1" in upgraded.stdout, upgraded.stderr
    made = _riskroute("tokens", "create", "--role", "ops_lead", "--name", "olu", url=database_url)
    token = made.stdout.strip()
    assert made.returncode == 0 and token.startswith("rr_") and "shown once" in made.stderr
    bad_role = _riskroute("tokens", "create", "--role", "wizard", "--name", "x", url=database_url)
    assert bad_role.returncode == 2 and "wizard" in bad_role.stderr
    assert _riskroute("audit", "verify", url=database_url).returncode == 0
    # The data outlives the process: a new connection finds the token and an intact chain.
    database = open_database(url=database_url)
    with database.sessions() as session:
        assert tokens.authenticate(session=session, token=token).role == "ops_lead"
        assert audit.verify(session=session).entries == 2
    database.dispose()


def test_audit_verify_names_the_entry_edited_by_hand(database_url):
    _riskroute("db", "upgrade", url=database_url)
    _riskroute("tokens", "create", "--role", "admin", "--name", "root", url=database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        connection.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    engine.dispose()
    broken = _riskroute("audit", "verify", url=database_url)
    assert broken.returncode == 1 and "BROKEN at entry 2" in broken.stderr and "edited" in broken.stderr
