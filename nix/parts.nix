# A part is one blob of an image as Nix provides it (enginefab/nix/parts.py):
#   { layer = <layer derivation>; }                         a built layer (nix/layer.nix)
#   { blob = <fetch>; digest = "sha256:…"; mediaType = …; }  a base-image layer blob
#   { missing = <failing derivation>; }                      a base whose layers were never resolved
# `wire` is its JSON form for the builders (store paths instead of derivations).
{
  wire = part:
    if part ? layer then { layer = "${part.layer}"; }
    else if part ? missing then { missing = "${part.missing}"; }
    else { blob = "${part.blob}"; inherit (part) digest mediaType; };
}
