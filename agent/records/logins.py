"""Login attempts limited per client address and per user name, kept in PostgreSQL so that every
chat server process shares the same limits.

Each key (an address, a name) may fail ``free`` times in a row; after that it must wait before its
next attempt is even looked at, a delay that doubles with every further failure up to a cap.
Failures older than the window are forgotten, and their rows pruned. An attempt is charged as a
failure *before* its password is checked, under a row lock, so a burst of concurrent attempts cannot
all slip past the count; a success refunds the address's charge and clears the name's failures.
A refused attempt costs one indexed read: no password hash is computed and nothing is written.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import psycopg

from agent.records.users import USER_NAME

UNKNOWN_ADDRESS = "unknown"  # a request without a peer address (a Unix socket): they share one key
_MAX_DOUBLINGS = 30  # 2**30 s is past any cap: the exponent stays small whatever the count


@dataclass(frozen=True)
class Limit:
    """How many failures a key has for free, and the delays after them."""

    free: int
    first_delay_s: float
    max_delay_s: float

    def delay_s(self, failures: int) -> float:
        """The wait before the next attempt, after ``failures`` failures in a row."""
        if failures < self.free:
            return 0.0
        return min(self.max_delay_s, self.first_delay_s * 2 ** min(failures - self.free, _MAX_DOUBLINGS))


@dataclass(frozen=True)
class LoginLimits:
    """The limits of both kinds of key. An address is looser than a name: an office behind one NAT
    shares an address, while a name is one person who rarely mistypes their password five times."""

    address: Limit = field(default_factory=lambda: Limit(free=5, first_delay_s=1.0, max_delay_s=60.0))
    name: Limit = field(default_factory=lambda: Limit(free=5, first_delay_s=1.0, max_delay_s=300.0))
    window_s: float = 900.0  # failures this old are forgotten

    def of(self, kind: str) -> Limit:
        return self.address if kind == "address" else self.name


@dataclass(frozen=True)
class Refused:
    """An attempt that must wait: how long, and which keys (kind, key) hold it back."""

    wait_s: float
    keys: tuple[tuple[str, str], ...]


class _Refused(Exception):
    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.wait_s)
        self.refused = refused


def address_key(host: str | None) -> str:
    """The key of a client address: IPv4 as it is, IPv6 by its /64 (one host is given a whole /64,
    so counting single IPv6 addresses would count nothing)."""
    if not host:
        return UNKNOWN_ADDRESS
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def attempt_keys(name: str, address: str | None) -> list[tuple[str, str]]:
    """The keys one attempt is counted under. A name that no user can have gets no row of its own
    (the address pays for it), which bounds what a stream of made-up names can store."""
    keys = [("address", address_key(address))]
    if USER_NAME.match(name):
        keys.append(("name", name))
    return keys


def _waits(conn: psycopg.Connection, keys: list[tuple[str, str]]) -> Refused | None:
    names = dict(keys)
    rows = conn.execute(
        "SELECT a.kind, a.key, extract(epoch FROM a.next_at - c.t)::float8"
        " FROM login_attempts a, (SELECT clock_timestamp() AS t) c WHERE a.next_at > c.t"
        " AND ((a.kind = 'address' AND a.key = %(address)s) OR (a.kind = 'name' AND a.key = %(name)s))",
        {"address": names["address"], "name": names.get("name")},
    ).fetchall()
    if not rows:
        return None
    return Refused(max(r[2] for r in rows), tuple((r[0], r[1]) for r in rows))


def _charge(conn: psycopg.Connection, kind: str, key: str, limits: LoginLimits) -> None:
    """Count one failure for the key and set its next delay; _Refused when it must still wait.
    Times are clock_timestamp() read after the row lock is taken, not now(): now() is when the
    transaction began, so one that began earlier but got the lock later would see a delay set by a
    later one as still running."""
    conn.execute(
        "INSERT INTO login_attempts (kind, key, next_at, last_at)"
        " VALUES (%s, %s, clock_timestamp(), clock_timestamp()) ON CONFLICT DO NOTHING",
        (kind, key),
    )
    failures, last_at, next_at = conn.execute(  # type: ignore[misc]
        "SELECT failures, last_at, next_at FROM login_attempts WHERE kind = %s AND key = %s FOR UPDATE", (kind, key)
    ).fetchone()
    now = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]  # read once the lock is ours
    wait_s = (next_at - now).total_seconds()
    stale = (now - last_at).total_seconds() > limits.window_s
    if wait_s > 0:
        raise _Refused(Refused(wait_s, ((kind, key),)))
    failures = 1 if stale else failures + 1
    conn.execute(
        "UPDATE login_attempts SET failures = %s, last_at = clock_timestamp(),"
        " next_at = clock_timestamp() + make_interval(secs => %s) WHERE kind = %s AND key = %s",
        (failures, limits.of(kind).delay_s(failures), kind, key),
    )


def admit(conn: psycopg.Connection, name: str, address: str | None, limits: LoginLimits) -> Refused | None:
    """Charge one login attempt to its address and name: None when its password may be checked now;
    else how long it must wait, and why (nothing is charged then)."""
    keys = attempt_keys(name, address)
    refused = _waits(conn, keys)  # the path of a flood: one read, no lock, no write
    if refused is not None:
        return refused
    try:
        with conn.transaction():
            for kind, key in keys:
                _charge(conn, kind, key, limits)
    except _Refused as late:  # another process charged the key meanwhile: nothing of ours is kept
        return late.refused
    return None


def login_succeeded(conn: psycopg.Connection, name: str, address: str | None, limits: LoginLimits) -> None:
    """A right password: the name's failures are cleared and the address's charge for it refunded."""
    key = address_key(address)
    with conn.transaction():
        conn.execute("DELETE FROM login_attempts WHERE kind = 'name' AND key = %s", (name,))
        row = conn.execute(
            "SELECT failures FROM login_attempts WHERE kind = 'address' AND key = %s FOR UPDATE", (key,)
        ).fetchone()
        if row is None:
            return
        failures = max(int(row[0]) - 1, 0)
        conn.execute(
            "UPDATE login_attempts SET failures = %s,"
            " next_at = least(next_at, clock_timestamp() + make_interval(secs => %s))"
            " WHERE kind = 'address' AND key = %s",
            (failures, limits.address.delay_s(failures), key),
        )


def prune_attempts(conn: psycopg.Connection, limits: LoginLimits) -> int:
    """Delete the rows of keys that neither failed within the window nor still wait; how many went."""
    with conn.transaction():
        return conn.execute(
            "DELETE FROM login_attempts"
            " WHERE last_at < clock_timestamp() - make_interval(secs => %s) AND next_at <= clock_timestamp()",
            (limits.window_s,),
        ).rowcount
