"""The action cache in an OCI registry: one artifact per layer key, in one repository.

An entry is an OCI image manifest tagged `action-<key>` whose config is the action-cache entry
(canonical JSON, media type `application/vnd.enginefab.action.v1+json`: key, layer id, media
type, digest, diff_id, size) and whose one layer is the layer blob itself, so any registry holds
it, `skopeo`/`oras` can list and copy it, and blobs shared with pushed images are stored once.

This module only moves entries (over `RegistryClient`, so every request has the transport's
timeouts, retries and size caps); what an entry is worth is decided by the caller
(`assemble/remote.py`), which checks every byte against the digests it expects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from enginefab.core import canonical
from enginefab.core.errors import RegistryError
from enginefab.transport.client import RegistryClient
from enginefab.transport.errors import NotFound
from enginefab.transport.reference import parse_reference

ENTRY_TYPE = "application/vnd.enginefab.action.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_KEY = re.compile(r"^[0-9a-f]{64}$")
#: an entry's config is a few hundred bytes; anything larger is not ours
MAX_ENTRY = 64 << 10


class BadEntry(RegistryError):
    """What the cache holds under a key is not an action-cache entry of ours."""


def tag_of(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not an action key: {key!r}")
    return f"action-{key}"


class RegistryActionCache:
    """`HOST[:PORT]/REPOSITORY` as a shared action cache (the `--cache` of build and release)."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.where = f"{client.host}/{repository}"

    @classmethod
    def at(cls, address: str, **client_options) -> "RegistryActionCache":
        """From `HOST[:PORT]/PREFIX` (no tag, no digest); the client's options as for a push."""
        ref = parse_reference(address)
        if ref.tag or ref.digest or not address.partition("/")[2]:
            raise RegistryError(f"--cache {address}: expected HOST[:PORT]/PREFIX (a repository, no tag)",
                                fix="e.g. --cache registry.example.com/team/enginefab-cache")
        return cls(RegistryClient.for_reference(ref, **client_options), ref.repository)

    def lookup(self, key: str) -> tuple[dict, dict] | None:
        """(the entry, the layer's descriptor) stored under `key`, or None if there is none. The
        entry is the config blob the manifest names (verified against its digest by the client)."""
        try:
            raw, _ = self.client.get_manifest_raw(self.repository, tag_of(key))
        except NotFound:
            return None
        try:
            manifest = json.loads(raw)
            config, layers = manifest["config"], manifest["layers"]
            if config["mediaType"] != ENTRY_TYPE or not isinstance(layers, list) or len(layers) != 1:
                raise ValueError("not an enginefab action entry")
            size = int(config["size"])
            if not 0 < size <= MAX_ENTRY:
                raise ValueError(f"entry of {size} bytes")
            entry = json.loads(self.client.get_blob_bytes(self.repository, str(config["digest"]), size=size))
        except (ValueError, KeyError, TypeError) as e:
            raise BadEntry(f"{self.where}:{tag_of(key)} is not a valid action-cache entry ({e})",
                                fix="it is ignored; the layer is built here and the entry replaced") from None
        if not isinstance(entry, dict) or not isinstance(layers[0], dict):
            raise BadEntry(f"{self.where}:{tag_of(key)} is not a valid action-cache entry")
        return entry, layers[0]

    def blob(self, digest: str, size: int) -> Iterator[bytes]:
        """The layer's bytes, never more than `size` (the client checks digest and size)."""
        return self.client.stream_blob(self.repository, digest, size=size)

    def has(self, key: str) -> bool:
        return self.client.head_manifest(self.repository, tag_of(key)) is not None

    def publish(self, key: str, entry: dict, blob: Path) -> int:
        """Upload the layer (if the repository lacks it), the entry, then the tag; returns bytes sent."""
        sent = self.client.upload_blob_file(self.repository, entry["digest"], entry["size"], blob)
        config = canonical.dumps(entry)
        sent += self.client.upload_blob_bytes(self.repository, config)
        manifest = canonical.dumps({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": ENTRY_TYPE, "digest": canonical.digest(config), "size": len(config)},
            "layers": [{"mediaType": entry["media_type"], "digest": entry["digest"], "size": entry["size"]}],
            "annotations": {"org.opencontainers.image.title": str(entry.get("layer", ""))},
        })
        self.client.put_manifest(self.repository, tag_of(key), manifest, MANIFEST_TYPE)
        return sent + len(manifest)
