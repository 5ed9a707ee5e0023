"""Roles: a user is an ordinary ``user`` or an ``operator``; the local operator (no login, ``user=None``) is one.

Every console action calls ``require_operator`` on the server with the caller it resolved itself, so a
page that a user should not see is refused even when its endpoints are called directly.
"""

from __future__ import annotations

from typing import Literal

import psycopg

from agent.records.access import AccessError
from agent.records.users import User, UserError

Role = Literal["user", "operator"]
ROLES: tuple[Role, ...] = ("user", "operator")


def set_role(conn: psycopg.Connection, name: str, role: Role) -> None:
    """Make a user an operator or an ordinary user."""
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    with conn.transaction():
        if conn.execute("UPDATE users SET role = %s WHERE name = %s", (role, name)).rowcount != 1:
            raise UserError(f"no user {name!r}")


def role_of(conn: psycopg.Connection, user: User | None) -> Role | None:
    """The user's role; ``operator`` for the local operator; None for a user who is gone."""
    if user is None:
        return "operator"
    row = conn.execute("SELECT role FROM users WHERE id = %s", (user.id,)).fetchone()
    return row[0] if row else None


def is_operator(conn: psycopg.Connection, user: User | None) -> bool:
    """Whether the user may use the console (read every turn, review, build eval sets)."""
    return role_of(conn, user) == "operator"


def require_operator(conn: psycopg.Connection, user: User | None) -> None:
    """Refuse anyone but an operator (checked against the database on every call, so a demotion counts at once)."""
    if not is_operator(conn, user):
        raise AccessError("the console is for operators (ladder users role NAME operator)")
