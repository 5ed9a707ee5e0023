"""`ladder users`: the chat's users and their API tokens; `ladder collections access`: private or shared.

Passwords are read from a hidden prompt or ``--password-stdin``, never from an argument (which
shell history and process lists keep). Wired into the ``ladder`` app by agent/cli.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agent.cli.common import err, load_settings, out, run

if TYPE_CHECKING:
    from knowledge.db import Database

users_app = typer.Typer(
    help="Users of the chat and API: once one exists, the chat needs a login and MCP/API callers a token.",
    no_args_is_help=True,
)
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _database() -> Database:
    from knowledge.db import Database

    return Database(load_settings().database_config())


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Login name.")],
    password_stdin: PasswordStdin = False,
    operator: Annotated[bool, typer.Option("--operator", help="May use the console (every turn, review).")] = False,
) -> None:
    """Add a user (the first one turns logins on at the next `ladder chat`)."""
    from agent.records.users import add_user, check_name

    def body() -> None:
        check_name(name)
        password = _password(password_stdin)
        with _database() as db, db.connection() as conn:
            add_user(conn, name, password, operator=operator)
        out.print(f"added {'operator' if operator else 'user'} {name}", highlight=False, markup=False)

    run(body)


@users_app.command("role")
def users_role(
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Argument(help="operator (may use the console) or user.")],
) -> None:
    """Make a user an operator or an ordinary user (counts at their next console action)."""
    from agent.records.roles import ROLES, set_role

    if role not in ROLES:
        raise typer.BadParameter("use operator or user", param_hint="ROLE")

    def body() -> None:
        with _database() as db, db.connection() as conn:
            set_role(conn, name, role)  # type: ignore[arg-type]
        out.print(f"{name} is now {'an operator' if role == 'operator' else 'a user'}", highlight=False, markup=False)

    run(body)


@users_app.command("passwd")
def users_passwd(name: Annotated[str, typer.Argument()], password_stdin: PasswordStdin = False) -> None:
    """Set a user's password; their browser sessions end (within a second, on every chat server)."""
    from agent.records.users import set_password

    def body() -> None:
        password = _password(password_stdin)
        with _database() as db, db.connection() as conn:
            set_password(conn, name, password)
        out.print(f"password of {name} changed; their browser sessions end", highlight=False, markup=False)

    run(body)


@users_app.command("remove")
def users_remove(name: Annotated[str, typer.Argument()]) -> None:
    """Remove a user, their tokens and sessions (their turns and collections pass to the operator)."""
    from agent.records.users import remove_user

    def body() -> None:
        with _database() as db, db.connection() as conn:
            remove_user(conn, name)
        out.print(f"removed user {name}", highlight=False, markup=False)

    run(body)


@users_app.command("list")
def users_list() -> None:
    """The users, with how many API tokens each has and when one was last used."""
    from agent.records.users import list_users

    def body() -> None:
        with _database() as db, db.connection() as conn:
            users = list_users(conn)
        table = Table("user", "role", "created", "tokens", "token last used")
        for u in users:
            used = u["token_last_used"]
            table.add_row(
                str(u["name"]),
                str(u["role"]),
                f"{u['created_at']:%Y-%m-%d}",
                str(u["tokens"]),
                f"{used:%Y-%m-%d %H:%M}" if used else "never",
            )
        out.print(table)

    run(body)


@users_app.command("token")
def users_token(
    name: Annotated[str, typer.Argument(help="The user the token acts as.")],
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
) -> None:
    """Create an API token for MCP/API callers (`Authorization: Bearer <token>`); it is shown only now."""
    from agent.records.users import create_token

    def body() -> None:
        with _database() as db, db.connection() as conn:
            token_id, token = create_token(conn, name, label)
        print(token)  # alone on stdout, so that `$(ladder users token ann)` composes
        err.print(f"token {token_id} for {name}: store it now, it is not shown again", style="dim", markup=False)

    run(body)


@users_app.command("tokens")
def users_tokens(name: Annotated[str | None, typer.Argument(help="Only this user's.")] = None) -> None:
    """The API tokens (ids and labels, never the tokens)."""
    from agent.records.users import list_tokens

    def body() -> None:
        with _database() as db, db.connection() as conn:
            tokens = list_tokens(conn, name)
        table = Table("id", "user", "label", "created", "last used")
        for t in tokens:
            used = t["last_used_at"]
            table.add_row(
                str(t["id"]),
                str(t["user"]),
                str(t["label"]),
                f"{t['created_at']:%Y-%m-%d}",
                f"{used:%Y-%m-%d %H:%M}" if used else "never",
            )
        out.print(table)

    run(body)


@users_app.command("revoke")
def users_revoke(token_id: Annotated[int, typer.Argument(help="The token's id (ladder users tokens).")]) -> None:
    """Revoke an API token; the next request with it gets 401."""
    from agent.records.users import revoke_token

    def body() -> None:
        with _database() as db, db.connection() as conn:
            revoke_token(conn, token_id)
        out.print(f"revoked token {token_id}", highlight=False, markup=False)

    run(body)


def collections_access(
    name: Annotated[str, typer.Argument(help="The collection.")],
    visibility: Annotated[str, typer.Argument(help="private (its owner only) or shared (every user reads it).")],
    owner: Annotated[str | None, typer.Option(help="Give it to this user (who may then ingest into it).")] = None,
) -> None:
    """Make a collection private or shared, and optionally give it to a user."""
    if visibility not in ("private", "shared"):
        raise typer.BadParameter("use private or shared", param_hint="VISIBILITY")
    from agent.records.access import set_visibility

    def body() -> None:
        with _database() as db, db.connection() as conn:
            set_visibility(conn, name, visibility, owner)  # type: ignore[arg-type]
        out.print(f"{name}: {visibility}" + (f", owned by {owner}" if owner else ""), highlight=False, markup=False)

    run(body)
