"""What every model of engines/ shares: a strict base (unknown keys are errors), the arches,
the trust a pin carries, and the day and instant types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from enginefab.core import instants

Arch = Literal["x86_64", "aarch64"]
AcceleratorKind = Literal["cpu", "cuda", "cann"]

#: OCI platform of each arch
OCI_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

#: who vouches for a pinned hash: the vendor published it; a third party did (someone else's
#: script, mirror or CI, not the vendor); or it was recorded from the first file a user supplied
Trust = Literal["vendor-published", "third-party", "recorded-on-first-use"]
TRUST_HELP = ("vendor-published (the vendor lists this hash or digest), third-party (another project pins it; "
              "the vendor publishes none), recorded-on-first-use (no published hash: the first file supplied is trusted)")


#: a day (YYYY-MM-DD), or a day or an RFC 3339 UTC instant, as engines/ writes them
Day = Annotated[str, AfterValidator(lambda v: instants.checked(v, day_only=True))]
Instant = Annotated[str, AfterValidator(instants.checked)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
