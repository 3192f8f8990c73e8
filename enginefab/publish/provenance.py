"""Build provenance: an in-toto Statement v1 with a SLSA v1 provenance predicate.

Subject: the image manifest digest. buildDefinition: the pinned definition (its digest) as the
external parameter, every input the lock pinned as a resolved dependency (URI + sha256), the
compression contract and SOURCE_DATE_EPOCH as internal parameters. runDetails: the builder's
identity (the settings' ``ENGINEFAB_BUILDER_ID``, e.g. the CI job's URL; default ``urn:enginefab:builder:local``)
and versions. No timestamps or host names: the same lock and builder give the same bytes.
"""

from __future__ import annotations

from enginefab import __version__
from enginefab.assemble.builder import BUILDER_VERSION
from enginefab.core import canonical
from enginefab.core.definition import Definition, Input
from enginefab.core.settings import DEFAULT_BUILDER
from enginefab.publish.sbom import definition_digest

MEDIA_TYPE = "application/vnd.in-toto+json"
STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:enginefab:build-type:oci-image:v1"


def _dependency(inp: Input) -> dict:
    d: dict = {"name": inp.ref, "annotations": {"kind": inp.kind, "size": inp.size}}
    if inp.url:
        d["uri"] = f"oci://{inp.url}" if inp.kind == "oci" else inp.url
    if inp.sha256:
        d["digest"] = {"sha256": inp.sha256}
    if inp.kind == "git":
        d["uri"] = f"git+{inp.url}@{inp.commit}"
        d["digest"] = {**d.get("digest", {}), "gitCommit": inp.commit, "gitTree": inp.tree}
    if inp.filename:
        d["annotations"]["filename"] = inp.filename
    if inp.trust:  # a pin written in engines/: who vouches for its hash
        d["annotations"]["trust"] = inp.trust
    return d


def statement(defn: Definition, manifest_digest: str, *, builder: str = DEFAULT_BUILDER) -> dict:
    img = defn.image
    ddig = definition_digest(defn)
    deps = [{"name": f"build/{img.alias}.json", "digest": {"sha256": ddig},
             "mediaType": "application/vnd.enginefab.definition.v1+json"}]
    seen = set()
    # a run step's build-only tools are dependencies of the build too, in no layer of the image
    for inp, role in [*((i, None) for i in defn.inputs()), *((i, "build-tool") for i in defn.tools())]:
        if inp.kind == "run":
            continue  # the step's script is part of the definition above
        key = (inp.kind, inp.name, inp.version, inp.sha256)
        if key not in seen:
            seen.add(key)
            deps.append(_dependency(inp))
            if role:
                deps[-1]["annotations"]["role"] = role
    return {
        "_type": STATEMENT,
        "subject": [{"name": img.name, "digest": {"sha256": manifest_digest.split(":", 1)[1]}}],
        "predicateType": PREDICATE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"image": img.alias, "name": img.name,
                                       "definition": {"path": f"build/{img.alias}.json", "sha256": ddig}},
                "internalParameters": {"compression": defn.compression.model_dump(mode="json"),
                                       "sourceDateEpoch": defn.source_date_epoch,
                                       "platform": dict(img.platform)},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": builder,
                            "version": {"enginefab": __version__, "layers": BUILDER_VERSION}},
                "metadata": {"invocationId": f"{img.alias}@{manifest_digest}"},
            },
        },
    }


def statement_json(defn: Definition, manifest_digest: str, *, builder: str = DEFAULT_BUILDER) -> bytes:
    return canonical.dumps(statement(defn, manifest_digest, builder=builder))
