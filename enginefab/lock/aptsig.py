"""Trust in an apt repository: its Release signed by exactly the keys platforms.toml pins, for
the suite it asks for, not expired. Nothing here ever fails open.

* The signature is checked by ``gpgv`` (GnuPG's verify-only tool, what apt itself runs) against
  the repository's keyring; a signature counts only when gpgv reports it VALIDSIG *and* the
  primary key that made it is one of the fingerprints the repository pins. No gpgv, no keyring,
  no signature, a bad one, or one by any other key: the index is refused, with the fix.
* The text used is the one gpgv verified (``--output``), from an InRelease of exactly one
  clear-signed message (nothing before or after it), or a Release with its detached Release.gpg.
* ``Codename`` or ``Suite`` must be the suite the matrix asks for (an old, validly signed
  Release of another suite is a downgrade); ``Valid-Until`` in the past refuses the index unless
  the repository is declared ``frozen`` (snapshot.debian.org style archives never change).

`release_problems` is pure (text, repository, now); `verify_signed` runs gpgv.
"""

from __future__ import annotations

import base64
import email.utils
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from enginefab.core import tools
from enginefab.core.errors import LockError
from enginefab.engines.model import AptRepo

GPGV_FIX = "install gpgv (./dev setup installs it; or apt-get install gpgv)"
_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIG_END = b"-----END PGP SIGNATURE-----"


@dataclass(frozen=True)
class Signers:
    """What gpgv said: primary-key fingerprints of good signatures, and whether any was bad."""

    good: tuple[str, ...]
    bad: bool


def parse_status(status: str) -> Signers:
    """gpgv's --status-fd lines → the primary keys (VALIDSIG field 10) of the signatures that are
    GOODSIG — a signature by an expired or revoked key, or an expired signature, does not count
    (apt refuses them too); BADSIG anywhere marks the whole text as altered."""
    good, bad = [], False
    block: dict[str, str] = {}

    def close() -> None:
        if block.get("good") and block.get("fpr"):
            good.append(block["fpr"])

    for line in status.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != "[GNUPG:]":
            continue
        word = parts[1]
        if word == "NEWSIG":
            close()
            block = {}
        elif word == "GOODSIG":
            block["good"] = "1"
        elif word == "VALIDSIG" and len(parts) >= 3:
            block["fpr"] = parts[-1].upper()
        elif word == "BADSIG":
            bad = True
    close()
    return Signers(good=tuple(good), bad=bad)


def _one_clearsigned(data: bytes) -> bool:
    """Exactly one clear-signed message and nothing around it (apt refuses the same)."""
    body = data.strip()
    return (body.startswith(_BEGIN) and body.endswith(_SIG_END) and body.count(_BEGIN) == 1
            and body.count(_SIG_BEGIN) == 1 and body.count(_SIG_END) == 1)


def dearmor(key: bytes) -> bytes:
    """An OpenPGP key file as gpgv reads it (binary packets): every ASCII-armoured block decoded."""
    text = key.decode("ascii", "replace")
    blocks = re.findall(r"-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n(.*?)-----END PGP PUBLIC KEY BLOCK-----", text, re.S)
    if not blocks:
        return key
    out = b""
    for block in blocks:
        body = block.split("\n\n", 1)[-1] if re.match(r"^[A-Za-z-]+: ", block) else block
        lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.startswith("=")]
        try:
            out += base64.b64decode("".join(lines), validate=True)
        except ValueError:
            raise LockError("a repository key is ASCII armour around something that is not base64",
                            fix="point keyring in platforms.toml at the publisher's key file") from None
    return out


def verify_signed(repo: AptRepo, keyring: bytes, data: bytes, *, what: str, signature: bytes | None = None) -> str:
    """The text of `data` that the repository's pinned keys signed (InRelease clear-signed, or
    Release with its detached `signature`). `keyring`: the repository's keys (armoured or not).
    Raises LockError otherwise."""
    where = f"apt:{repo.label}"
    gpgv = tools.which("gpgv")
    if gpgv is None:
        raise LockError(f"cannot check the signature of {what}: gpgv is not installed", input=where, fix=GPGV_FIX)
    if signature is None and not _one_clearsigned(data):
        raise LockError(f"{what} is not one clear-signed message (unsigned, or text outside the signature)",
                        input=where, fix="the repository or a proxy serves an unsigned or altered index; "
                        "check the url in platforms.toml (never accept it unsigned)")
    with tempfile.TemporaryDirectory(prefix="enginefab-gpgv-") as tmp:
        out, ring = Path(tmp) / "signed", Path(tmp) / "keyring.gpg"
        ring.write_bytes(dearmor(keyring))
        args = [gpgv, "--status-fd", "1", "--keyring", str(ring)]
        if signature is None:
            args += ["--output", str(out), "-"]
            stdin = data
        else:
            (Path(tmp) / "Release.gpg").write_bytes(signature)
            (Path(tmp) / "Release").write_bytes(data)
            args += [str(Path(tmp) / "Release.gpg"), str(Path(tmp) / "Release")]
            stdin = b""
        try:
            proc = subprocess.run(args, input=stdin, capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise LockError(f"gpgv did not finish checking {what} within 60 s", input=where,
                            fix="the index is huge or hostile; check the url in platforms.toml") from None
        signers = parse_status(proc.stdout.decode("utf-8", "replace"))
        pinned = {f.upper() for f in repo.fingerprints}
        ok = [f for f in signers.good if f in pinned]
        if signers.bad or not ok:
            raise LockError(_refusal(what, repo, signers, proc.stderr.decode("utf-8", "replace")), input=where,
                            fix=_refusal_fix(repo, signers))
        text = data if signature is not None else out.read_bytes()
    return text.decode("utf-8", "replace")


def _refusal(what: str, repo: AptRepo, signers: Signers, stderr: str) -> str:
    pinned = ", ".join(repo.fingerprints)
    if signers.bad:
        return f"{what}: a signature does not verify (BADSIG: the index was altered)"
    if signers.good:
        return f"{what} is signed by {', '.join(signers.good)}, not by a key platforms.toml pins ({pinned})"
    said = " ".join(line.strip() for line in stderr.splitlines() if line.strip())[:300]
    return f"{what} carries no valid signature by a pinned key ({pinned}); gpgv: {said or 'no signature'}"


def _refusal_fix(repo: AptRepo, signers: Signers) -> str:
    if signers.good:
        return (f"if {repo.url} really rotated its key, check the new fingerprint with its publisher and pin it in "
                "the repository's fingerprints (platforms.toml [apt.…]); otherwise this is not the repository declared")
    return (f"check the keyring and fingerprints of {repo.url} in platforms.toml [apt.…], and that the url is "
            "the real repository")


# -- the Release fields (pure) ------------------------------------------------------------


def release_fields(text: str) -> dict[str, str]:
    """The single-line fields of a Release paragraph (hash lists are read elsewhere)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0].isspace() or line.startswith("-----"):
            continue
        key, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[A-Za-z0-9-]+", key):
            out.setdefault(key, value.strip())
    return out


def release_problems(text: str, repo: AptRepo, now: datetime) -> list[str]:
    """Why a verified Release is still not the one the matrix asks for: another suite, or expired."""
    f = release_fields(text)
    out = []
    if repo.suite:
        names = {v for v in (f.get("Codename"), f.get("Suite")) if v}
        if repo.suite not in names:
            have = " / ".join(f"{k} {f[k]}" for k in ("Codename", "Suite") if f.get(k)) or "no Codename or Suite"
            out.append(f"the Release is for {have}, not {repo.suite} (a validly signed index of another suite: "
                       f"a downgrade or a wrong url)")
    until = f.get("Valid-Until")
    if until and not repo.frozen:
        try:
            when = email.utils.parsedate_to_datetime(until)
        except (TypeError, ValueError):
            out.append(f"Valid-Until {until!r} is not a date")
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            if when < now:
                out.append(f"the Release expired at {until} (Valid-Until): an old index replayed, or a mirror that "
                           f"stopped syncing")
    return out
