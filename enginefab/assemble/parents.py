"""A derived image's matrix parent, built into the store for the lock: its manifest and config
are what the child's base layer pins (lock/parent.py reads them)."""

from __future__ import annotations

from enginefab.assemble.builder import Builder, Parents
from enginefab.assemble.store import Store
from enginefab.core.definition import Definition
from enginefab.engines.matrix import Image
from enginefab.lock import parentrecord
from enginefab.lock.locker import ParentSource
from enginefab.transport.session import Session


def parent_source(store: Store, parents: Parents, session: Session) -> ParentSource:
    """What `lock` calls for a matrix parent: build it here (cached layers cost a stat; inputs
    through `session`) and read its manifest and config."""

    def build(img: Image, defn: Definition, raw: bytes) -> parentrecord.ParentPins:
        with store.using():
            built = Builder(store, session=session, parents=parents).image(defn)
            config = store.read(built.blobs[0])
        return parentrecord.from_matrix(defn, raw, built.manifest, config)

    return build
