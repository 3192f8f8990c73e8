"""Start Debian's `docker-registry` (distribution 2.8) on loopback, for the demo and the tests.

It listens on 127.0.0.1 only, stores under a directory of ours, allows deletes, and can add
htpasswd (bcrypt) auth and TLS with a self-signed certificate for 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from enginefab.core.errors import RegistryError

BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    root: Path
    port: int
    proc: subprocess.Popen | None = None
    tls: tuple[Path, Path] | None = None  # cert, key
    htpasswd: Path | None = None
    #: bearer-token auth: {"realm": URL of the token service, "service", "issuer", "rootcertbundle": PEM
    #: of the certificate whose key signs the tokens}
    token: dict[str, str] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root / 'data'}",
            "  delete:",
            "    enabled: true",
            "  cache:",
            "    blobdescriptor: inmemory",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: enginefab", f"    path: {self.htpasswd}"]
        elif self.token:
            lines += ["auth:", "  token:"] + [f"    {k}: {self.token[k]}" for k in
                                               ("realm", "service", "issuer", "rootcertbundle")]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15) -> "Registry":
        if not Path(BINARY).exists():
            raise RegistryError("Debian's docker-registry is not installed", fix="apt-get install docker-registry")
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.yml"
        cfg.write_text(self.config())
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen([BINARY, "serve", str(cfg)], stdout=log, stderr=log, start_new_session=True)
        (self.root / "pid").write_text(str(self.proc.pid))
        (self.root / "port").write_text(str(self.port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryError(f"docker-registry exited at start: {(self.root / 'registry.log').read_text()[-800:]}")
            try:
                r = requests.get(f"{self.url}/v2/", timeout=1, verify=str(self.tls[0]) if self.tls else True)
                if r.status_code in (200, 401):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RegistryError(f"docker-registry did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def add_user(path: Path, user: str, password: str) -> None:
    import bcrypt

    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=6)).decode()
    with open(path, "a") as f:
        f.write(f"{user}:{h}\n")


def self_signed(dir_: Path) -> tuple[Path, Path]:
    """A CA-less self-signed certificate for 127.0.0.1 (IP SAN), made with openssl."""
    dir_.mkdir(parents=True, exist_ok=True)
    cert, key = dir_ / "cert.pem", dir_ / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
