"""The rule that an image's canonical name says what its fields say (ModelArts naming)."""

from __future__ import annotations

from enginefab.core.versions import same_version
from enginefab.engines.image import Image
from enginefab.engines.names import NameError_
from enginefab.engines.rules.base import Context, rule


@rule("name-matches-fields", "the canonical name says what the fields say", "ModelArts naming")
def name_matches_fields(img: Image, ctx: Context):
    if img.derived:  # a custom image's name is its own, not a preset's canonical name
        return
    try:
        n = img.parsed_name
    except NameError_ as e:
        yield (f"field name: {e}", "write the name as engine_ver[-framework_ver]-accel[_ver]-py_X.Y-os_ver-arch, "
               "starting with an engine of engines/")
        return
    checks = [
        ("engine", n.engine, img.engine.name, False),
        ("engine_version", n.engine_version, img.d.engine_version, True),
        ("framework", n.effective_framework, img.framework, False),
        ("framework_version", n.effective_framework_version, img.framework_version, True),
        ("accelerator", n.accelerator, img.accelerator, False),
        ("python", n.python, img.d.python, False),
        ("os", n.os, img.os.name, False),
        ("os_version", n.os_version, img.os.version, True),
        ("arch", n.arch, img.arch, False),
    ]
    if n.accelerator == img.accelerator:  # the version of another kind is no second contradiction
        checks.insert(5, ("accelerator_version", n.accelerator_version, img.accelerator_version, True))
    for fieldname, said, actual, is_version in checks:
        if said is None:  # the spelling does not say it (KungFu style, "cpu")
            continue
        ok = actual is not None and (same_version(said, actual) if is_version else said == actual)
        if not ok:
            setting = _SET_BY.get(fieldname, fieldname)
            yield (
                f"field {setting}: the name contradicts the fields: {img.name!r} says {fieldname} {said!r}, "
                f"but the image's {fieldname} is {actual!r}" + (f" (from {setting} = {_raw(img, setting)!r})"
                                                                  if setting in ("os", "accelerator") else ""),
                f"make the name say {fieldname} {actual!r}, or "
                + (f"move the image to engines/{said}.toml" if fieldname == "engine" else
                   f"set the {setting} field to match the name"),
            )


#: fields of an image that are derived: the field of [[image]] that sets them
_SET_BY = {"accelerator_version": "accelerator", "os_version": "os"}


def _raw(img: Image, fieldname: str) -> object:
    return getattr(img.d, fieldname, None)
