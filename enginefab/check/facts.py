"""What the static audit compares an image's files against: its definition's facts, or the
declared facts of a base that is out of reach (for auditing engine layers on their own)."""

from __future__ import annotations

from dataclasses import dataclass, field

from enginefab.check.modelarts import MA_HOME, USER_IDS, kind_of
from enginefab.check.structure import Dlopen, Suite
from enginefab.core.definition import Definition
from enginefab.core.pytarget import Target
from enginefab.engines.compat import version_in


@dataclass
class Facts:
    """What the audit compares against; from the definition, or declared for an absent base."""

    arch: str
    glibc: str
    env: dict[str, str]
    accelerator: str
    stack_provides: list[str]
    host_provides: list[str]
    python: Target
    site_packages: str
    pins: dict[str, str]  # wheel name → version
    user: str = "1000:100"
    workdir: str = "/home/ma-user"
    home_user: tuple[str, int, int, str] = ("ma-user", 1000, 100, "/home/ma-user")
    #: sonames the (absent) base provides, when auditing layers without their base
    base_provides: list[str] = field(default_factory=list)
    engine: str = ""
    engine_version: str = ""
    stack: str = ""
    #: soname → why it may stay unresolved (engines/checks/<engine>.yaml optionalSonames)
    optional: dict[str, str] = field(default_factory=dict)
    #: libraries the engine dlopens (engines/checks/<engine>.yaml dlopen), for this engine version
    dlopen: list[Dlopen] = field(default_factory=list)
    #: "training" or "model" (ModelArts' two kinds of custom image)
    kind: str = "training"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    exposed_ports: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, d: Definition, suite: Suite | None = None) -> "Facts":
        ext = suite.enginefab if suite else None
        return cls(
            arch=d.image.arch, glibc=d.image.glibc, env=dict(d.config.env), accelerator=d.image.accelerator,
            stack_provides=list(d.checks.accelerator_provides), host_provides=list(d.checks.host_provides),
            python=Target(python=d.python.version, arch=d.image.arch, glibc=d.image.glibc),
            site_packages=d.python.site_packages,
            pins={i.name: i.version for layer in d.layers for i in layer.inputs if i.kind == "wheel"},
            user=d.config.user, workdir=d.config.workdir,
            # ModelArts' account, whatever the config says: the audit checks the config against it
            home_user=("ma-user", *USER_IDS, MA_HOME),
            engine=d.image.engine, engine_version=d.image.engine_version,
            stack=f"{d.image.accelerator} {d.image.accelerator_version or ''}".strip(),
            optional={o.soname: o.reason for o in ext.optionalSonames} if ext else {},
            dlopen=[x for x in ext.dlopen if version_in(
                d.image.framework_version if x.engine == d.image.framework != d.image.engine else d.image.engine_version,
                x.versions)] if ext else [],
            kind=kind_of(d.image.kind), entrypoint=list(d.config.entrypoint or []), cmd=list(d.config.cmd or []),
            exposed_ports=list(d.config.exposed_ports or []),
        )
