"""The unit tier's network guard: a unit test that reaches past loopback fails, loudly and at once.

While a unit test runs, resolving a name other than localhost, or connecting (or sending a
datagram) to an address that is not loopback, raises the error an offline machine gives (so the
code under test fails fast instead of waiting on a timeout) and is recorded; the test then fails
at teardown naming every address it tried, even if the code caught the error and carried on.
It covers the test's own process; `./dev test --unit` (tests/offline.py) also cuts subprocesses.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _ip(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%", 1)[0]
    try:
        return host, ipaddress.ip_address(host)
    except ValueError:
        return host, None


def is_local(host) -> bool:
    """Loopback (an address or a name for it)."""
    if host is None or host == "":
        return True
    host, ip = _ip(host)
    return ip.is_loopback if ip is not None else host.lower() in LOCAL_NAMES


def needs_dns(host) -> bool:
    """Resolving `host` would ask a name server (an address literal or localhost asks none)."""
    return not is_local(host) and _ip(host)[1] is None


class Guard:
    """Patches socket for one test (through pytest's monkeypatch); `.attempts` lists what was tried."""

    def __init__(self, monkeypatch) -> None:
        self.attempts: list[str] = []
        real_getaddrinfo = socket.getaddrinfo
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_sendto = socket.socket.sendto
        guard = self

        def refuse(what: str, exc: OSError) -> OSError:
            guard.attempts.append(what)
            return exc

        def getaddrinfo(host, port, *a, **kw):
            if needs_dns(host):
                raise refuse(f"resolve {host}:{port}", socket.gaierror(
                    socket.EAI_NONAME, f"the network is cut for unit tests (resolving {host})"))
            return real_getaddrinfo(host, port, *a, **kw)

        def check(sock, address) -> None:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0]):
                raise refuse(f"connect {address[0]}:{address[1]}", OSError(
                    errno.ENETUNREACH, f"the network is cut for unit tests (connecting to {address[0]})"))

        def connect(sock, address):
            check(sock, address)
            return real_connect(sock, address)

        def connect_ex(sock, address):
            check(sock, address)
            return real_connect_ex(sock, address)

        def sendto(sock, data, *args):
            check(sock, args[-1])
            return real_sendto(sock, data, *args)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket.socket, "sendto", sendto)

    def report(self) -> str | None:
        if not self.attempts:
            return None
        tried = "; ".join(dict.fromkeys(self.attempts))
        return (f"a unit test reached for the network ({tried}): serve the data from 127.0.0.1 "
                "(conftest's http_mirror) or mark the test `network`")
