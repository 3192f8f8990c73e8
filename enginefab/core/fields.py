"""Constrained field types shared by the matrix (engines/*.toml) and the definitions (build/*.json).

Both arrive in pull requests, so every value is refused at load time — before any download,
path join or syscall — unless it is in range: a sha256 is 64 lowercase hex (it names a cache
file), a uid fits a tar header and /etc/passwd, a mode is a permission, a path in the image is
absolute and normalized, a URL has a scheme we fetch, names have a bounded length and a charset
that cannot break a file name, a tag or a passwd line. Nothing is normalized silently: a value
that is not already in canonical form is refused with the form it should have (`fix`).
Each rule's message says what is allowed, so the error is its own fix.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

#: uids and gids: what tar, the OCI config and the kernel all accept
ID_MAX = 2**31 - 1
#: bytes: larger than any real input, small enough for every int64 sum
SIZE_MAX = 2**50
#: the ustar mtime field (11 octal digits)
EPOCH_MAX = 8**11 - 1
URL_SCHEMES = ("https", "http")


def show(v: object, limit: int = 60) -> str:
    """A value for a message: repr, cut short (a 10,000-character alias is not echoed)."""
    r = repr(v)
    return r if len(r) <= limit else f"{r[:limit]}…({len(str(v))} characters)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _no_controls(v: str, what: str, *, newlines: bool = False) -> str:
    bad = (_CONTROL_BUT_NEWLINES if newlines else _CONTROL).search(v)
    if bad:
        raise ValueError(f"{show(v)}: {what} holds a control character {bad.group()!r}")
    return v


def _pattern(rx: str, rule: str):
    compiled = re.compile(rx)

    def check(v: str) -> str:
        if not compiled.fullmatch(v):
            raise ValueError(f"{show(v)} is not allowed: {rule}")
        return v

    return AfterValidator(check)


def _bounded_text(limit: int, what: str, *, newlines: bool = True):
    def check(v: str) -> str:
        if len(v) > limit:
            raise ValueError(f"{show(v)}: {what} is at most {limit} characters")
        return _no_controls(v, what, newlines=newlines)

    return AfterValidator(check)


def _image_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{show(v)}: a path in the image is absolute (starts with /)")
    _no_controls(v, "a path")
    if len(v) > 4096 or any(len(c) > 255 for c in v.split("/")):
        raise ValueError(f"{show(v)}: a path is at most 4096 characters, 255 per component")
    if ".." in v.split("/"):
        raise ValueError(f"{show(v)}: a path in the image has no '..' component")
    if any(c.startswith(".wh.") for c in v.split("/")):
        raise ValueError(f"{show(v)}: '.wh.' names are OCI whiteouts, which only enginefab writes")
    norm = posixpath.normpath(v)
    norm = "/" + norm.lstrip("/")
    if norm != v:
        raise ValueError(f"{show(v)}: a path in the image is normalized: write {show(norm)}")
    return v


_URL_BAD = re.compile(r"[\s\x00-\x1f\x7f]")


def _url(v: str, schemes: tuple[str, ...] = URL_SCHEMES) -> str:
    if len(v) > 2048:
        raise ValueError(f"{show(v)}: a URL is at most 2048 characters")
    if _URL_BAD.search(v):
        raise ValueError(f"{show(v)}: a URL holds no whitespace or control characters")
    try:
        u = urllib.parse.urlsplit(v)
    except ValueError as e:
        raise ValueError(f"{show(v)} is not a URL ({e})") from None
    if u.scheme not in schemes or not (u.hostname or u.scheme == "file"):
        raise ValueError(f"{show(v)}: a URL is {' or '.join(s + '://HOST/…' for s in schemes)}")
    if u.username is not None or u.password is not None:
        raise ValueError(f"{show(v)}: a URL carries no user or password (use the environment or a mirror)")
    return v


#: sha256 of bytes: exactly 64 lowercase hex (it is also a file name in the caches)
Sha256Hex = Annotated[str, _pattern(r"[0-9a-f]{64}", "a sha256 is exactly 64 lowercase hex digits")]
#: a git object id (SHA-1)
GitSha = Annotated[str, _pattern(r"[0-9a-f]{40}", "a git commit or tree is exactly 40 lowercase hex digits")]
#: an OCI digest
Digest = Annotated[str, _pattern(r"sha256:[0-9a-f]{64}", "a digest is sha256: and 64 lowercase hex digits")]
Size = Annotated[int, Field(ge=0, le=SIZE_MAX, strict=True)]
Id = Annotated[int, Field(ge=0, le=ID_MAX, strict=True)]
Mode = Annotated[int, Field(ge=0, le=0o7777, strict=True)]
Strip = Annotated[int, Field(ge=0, le=64, strict=True)]
Epoch = Annotated[int, Field(ge=0, le=EPOCH_MAX, strict=True)]
#: an image alias: also a tag, a file name (build/<alias>.json) and a Nix attribute
Alias = Annotated[str, _pattern(r"[a-z0-9][a-z0-9._-]{0,62}",
                                "an alias is 1-63 characters: lowercase letters, digits, '.', '_' and '-', "
                                "starting with a letter or digit")]
#: a canonical image name: also an OCI tag
ImageName = Annotated[str, _pattern(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
                                    "a canonical name is an OCI tag: 1-128 letters, digits, '.', '_' and '-'")]
#: an input's name: a package, a file, a run step, a registry repository
Name = Annotated[str, _pattern(r"[A-Za-z0-9_][A-Za-z0-9._+@:~-]{0,199}",
                               "a name is 1-200 characters: letters, digits and . _ + @ : ~ -, "
                               "starting with a letter, digit or '_'")]
#: an oci input's name: a repository, and which of its blobs ("docker.io/nvidia/cuda layer 3")
OciName = Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9._/:@ -]{0,299}",
                                  "an image input's name is registry/repository, then a space and which blob")]
#: one path component (a downloaded file's name inside the staging and input directories)
FileName = Annotated[str, _pattern(r"[A-Za-z0-9_][A-Za-z0-9._+~%=,-]{0,254}",
                                   "a file name is one path component of 1-255 letters, digits and . _ + ~ % = , -, "
                                   "starting with a letter, digit or '_'")]
Version = Annotated[str, _pattern(r"\*|[A-Za-z0-9][A-Za-z0-9 .+!:~_-]{0,127}",
                                  "a version is 1-128 letters, digits, spaces and . + ! : ~ _ -, or * (a package "
                                  "not pinned yet: the newest at lock time)")]
#: a Debian package name (Debian policy 5.6.1) or architecture
DebName = Annotated[str, _pattern(r"[a-z0-9][a-z0-9+.-]{0,127}",
                                  "a Debian package name is lowercase letters, digits, '+', '.' and '-'")]
#: a user or group name that cannot break /etc/passwd
UserName = Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_-]{0,31}",
                                   "a user or group name is 1-32 letters, digits, '_' and '-' (not starting with "
                                   "a digit or '-')")]
EnvName = Annotated[str, _pattern(r"[A-Za-z_][A-Za-z0-9_]{0,127}",
                                  "an environment variable name is letters, digits and '_' "
                                  "(not starting with a digit)")]
EnvValue = Annotated[str, _bounded_text(32768, "an environment value", newlines=False)]
#: a layer's id: readable, bounded (it appears in logs, cache keys and file names)
LayerId = Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9._+@:/-]{0,254}",
                                  "a layer id is 1-255 letters, digits and . _ + @ : / -")]
#: registry/repository[:tag][@digest]
OciReference = Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,511}",
                                       "an image reference is registry/repository[:tag][@sha256:…]")]
MediaType = Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9.+/_-]{0,254}", "a media type is type/subtype")]
ImagePath = Annotated[str, AfterValidator(_image_path)]
Url = Annotated[str, AfterValidator(_url)]
#: a git repository: also file:// (git reads a local repository; the pinned tree is verified)
GitUrl = Annotated[str, AfterValidator(lambda v: _url(v, ("https", "http", "file")))]
#: a download in a definition: also file:// (what mirrors and tests serve; the pinned sha256
#: decides what lands in a layer). engines/ itself names only http(s) URLs.
DownloadUrl = Annotated[str, AfterValidator(lambda v: _url(v, ("https", "http", "file")))]
#: a shell script or file content: bounded, no NUL
Script = Annotated[str, _bounded_text(1 << 20, "a script or file content")]
#: prose: descriptions, sources, where to download, comments
Text = Annotated[str, _bounded_text(8192, "this text")]
#: a short token: an arch, a suite, a component, an OS or stack id
#: an exposed port as an OCI image config names it: "8080/tcp" (protocol tcp or udp)
PortSpec = Annotated[str, _pattern(r"[1-9][0-9]{0,4}/(tcp|udp)", "a port is NUMBER/tcp or NUMBER/udp, e.g. 8080/tcp")]
#: a file of the project, relative to engines/ (an image's `add`)
ProjectFile = Annotated[str, _pattern(r"[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*){0,15}",
                                      "a file under engines/ is a relative path of names made of letters, digits and "
                                      "._+- (no '..', no leading '/')")]
#: what an image is for on the service (ModelArts): a training job, or a model served over HTTP
ImageKind = Literal["training", "model"]
Token = Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}",
                                "this is 1-64 letters, digits and . _ + -")]


def image_path_or_empty(v: str) -> str:
    """`dest` in engines/: empty (only for run steps) or an absolute normalized path."""
    return v if v == "" else _image_path(v)


OptionalImagePath = Annotated[str, AfterValidator(image_path_or_empty)]


def rule_of(err: Any) -> str:
    """A pydantic error's message without pydantic's prefix; a number out of range says the range."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("greater_than_equal", "less_than_equal", "int_type", "int_parsing", "int_from_float"):
        name = next((str(x) for x in reversed(err["loc"]) if isinstance(x, str)), "")
        if name in RANGES:
            msg = f"{show(err.get('input'))}: {name} is {RANGES[name]}"
    return msg


#: what each numeric field allows, for messages
RANGES = {"mode": "an integer in 0…4095 (0o7777)", "uid": "an integer in 0…2147483647",
          "gid": "an integer in 0…2147483647", "size": "an integer of bytes in 0…2**50",
          "strip_components": "an integer in 0…64", "source_date_epoch": "an integer of seconds in 0…8**11-1",
          "level": "an integer in 0…22", "block_size": "an integer in 0…2**30"}
