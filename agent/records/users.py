"""Users of the chat and the API: Argon2id password hashes and bearer tokens, in Ladder's database.

No users means a single local operator (no login). Once a user exists, the chat asks for a login
and MCP/API callers need a bearer token (``ladder users token NAME``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from knowledge.errors import LadderError

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024  # Argon2 takes any length; a bound keeps a login from being a CPU lever
TOKEN_PREFIX = "ldr_"  # recognisable, so redaction and secret scanners catch a leaked token
_hasher = PasswordHasher()
# Verifying an unknown name against this hash costs the same as a known one: no timing oracle.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(LadderError, ValueError):
    """A user operation that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class User:
    id: int
    name: str


@dataclass(frozen=True)
class Login:
    """A right password: the user, and the session generation it was checked under (a later password
    change bumps it, which ends the sessions made before)."""

    user: User
    generation: int


def check_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise UserError(f"user name {name!r} must be 1-64 letters, digits or _.@- and start with a letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"the password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserError(f"the password must be at most {MAX_PASSWORD_CHARS} characters")
    return password


def any_users(conn: psycopg.Connection) -> bool:
    """Whether logins are on (at least one user exists)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]  # type: ignore[index]


def add_user(conn: psycopg.Connection, name: str, password: str, *, operator: bool = False) -> User:
    """Create a user with an Argon2id hash of the password (an operator may use the console)."""
    check_name(name)
    digest = _hasher.hash(check_password(password))
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO users (name, password_hash, role) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING"
            " RETURNING id",
            (name, digest, "operator" if operator else "user"),
        ).fetchone()
    if row is None:
        raise UserError(f"user {name!r} already exists (ladder users passwd {name} changes the password)")
    return User(int(row[0]), name)


def set_password(conn: psycopg.Connection, name: str, password: str) -> None:
    digest = _hasher.hash(check_password(password))
    with conn.transaction():
        changed = conn.execute(  # a new generation: every browser session made before ends
            "UPDATE users SET password_hash = %s, session_generation = session_generation + 1 WHERE name = %s",
            (digest, name),
        )
        if changed.rowcount != 1:
            raise UserError(f"no user {name!r}")


def remove_user(conn: psycopg.Connection, name: str) -> None:
    """Remove a user and their tokens; their turns and collections pass to the operator (user NULL)."""
    with conn.transaction():
        if conn.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount != 1:
            raise UserError(f"no user {name!r}")


def list_users(conn: psycopg.Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT u.name, u.created_at, count(t.id), max(t.last_used_at), u.role FROM users u"
        " LEFT JOIN api_tokens t ON t.user_id = u.id GROUP BY u.id ORDER BY u.name"
    ).fetchall()
    keys = ("name", "created_at", "tokens", "token_last_used", "role")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def get_user(conn: psycopg.Connection, name: str) -> User | None:
    row = conn.execute("SELECT id, name FROM users WHERE name = %s", (name,)).fetchone()
    return User(int(row[0]), row[1]) if row else None


def login_record(conn: psycopg.Connection, name: str) -> tuple[Login, str] | None:
    """The user's login and stored hash, for ``password_matches`` (None when there is no such user)."""
    row = conn.execute(
        "SELECT id, name, password_hash, session_generation FROM users WHERE name = %s", (name,)
    ).fetchone()
    return (Login(User(int(row[0]), row[1]), int(row[3])), row[2]) if row else None


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether the password matches the hash; a missing hash costs the same and never matches (no
    timing oracle for which names exist). Slow by design (Argon2id): servers call it off their event
    loop, without a database connection held, and only after agent.records.logins admits the attempt."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        _hasher.verify(stored_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return stored_hash is not None


def check_login(conn: psycopg.Connection, name: str, password: str) -> Login | None:
    """The login when the password is right; None otherwise (the same cost whether or not the name exists)."""
    found = login_record(conn, name)
    if not password_matches(found[1] if found else None, password):
        return None
    return found[0] if found else None


def verify_login(conn: psycopg.Connection, name: str, password: str) -> User | None:
    """The user when the password is right; None otherwise (same cost whether or not the name exists)."""
    found = check_login(conn, name, password)
    return found.user if found else None


def session_generation(conn: psycopg.Connection, user_id: int) -> int | None:
    """The user's session generation; None when the user is gone (their sessions have ended)."""
    row = conn.execute("SELECT session_generation FROM users WHERE id = %s", (user_id,)).fetchone()
    return int(row[0]) if row else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: psycopg.Connection, name: str, label: str = "") -> tuple[int, str]:
    """A new bearer token for the user: (id, token). The token is shown once; only its digest is kept."""
    user = get_user(conn, name)
    if user is None:
        raise UserError(f"no user {name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO api_tokens (user_id, token_sha256, label) VALUES (%s, %s, %s) RETURNING id",
            (user.id, _digest(token), label[:200]),
        ).fetchone()
    assert row is not None
    return int(row[0]), token


def revoke_token(conn: psycopg.Connection, token_id: int) -> None:
    with conn.transaction():
        if conn.execute("DELETE FROM api_tokens WHERE id = %s", (token_id,)).rowcount != 1:
            raise UserError(f"no token {token_id}")


def list_tokens(conn: psycopg.Connection, name: str | None = None) -> list[dict[str, object]]:
    rows = conn.execute(
        "SELECT t.id, u.name, t.label, t.created_at, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id"
        " WHERE %(name)s::text IS NULL OR u.name = %(name)s ORDER BY t.id",
        {"name": name},
    ).fetchall()
    return [{"id": i, "user": u, "label": lab, "created_at": c, "last_used_at": used} for i, u, lab, c, used in rows]


def user_for_token(conn: psycopg.Connection, token: str) -> User | None:
    """The token's user, or None for an unknown or revoked token; notes when it was last used (to the minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        "SELECT t.id, u.id, u.name, t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute'"
        " FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_sha256 = %s",
        (_digest(token),),
    ).fetchone()
    if row is None:
        return None
    token_id, user_id, name, stale = row
    if stale:  # every HTTP request of an API caller checks its token: write at most once a minute
        with conn.transaction():
            conn.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = %s", (token_id,))
    return User(int(user_id), name)
