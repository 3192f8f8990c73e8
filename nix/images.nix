# Every build/<alias>.json → an image derivation, read at evaluation time (no
# import-from-derivation): `packages.<system>.<alias>`.
{ system, enginefab, buildDir, runTools }:
let
  inherit (builtins) attrNames filter foldl' head isAttrs listToAttrs map match readDir split tail;
  image = import ./image.nix { inherit system enginefab runTools; };
  entries = readDir buildDir;
  aliasOf = file: head (match "(.*)\\.json" file);
  files = filter (f: entries.${f} == "regular" && match ".*\\.json" f != null) (attrNames entries);

  images = listToAttrs (map (f: {
    name = aliasOf f;
    value = image { alias = aliasOf f; file = buildDir + "/${f}"; };
  }) files);

  # `nix build .#pytorch-cuda10.2` reads the attribute path pytorch-cuda10 → 2. Nix looks in
  # legacyPackages when packages has no such attribute, so the dotted aliases are also nested
  # there; `packages` keeps the real aliases (quoted: .#\"pytorch-cuda10.2\").
  isDrv = v: isAttrs v && (v.type or null) == "derivation";
  nest = path: value: if path == [ ] then value else { ${head path} = nest (tail path) value; };
  merge = a: b: a // builtins.mapAttrs (name: v:
    if a ? ${name} && isAttrs a.${name} && !(isDrv a.${name}) && isAttrs v && !(isDrv v)
    then merge a.${name} v else v) b;
  dotted = foldl' (acc: alias: merge acc (nest (filter builtins.isString (split "\\." alias)) images.${alias}))
    { } (attrNames images);
in
{
  inherit images;
  legacy = dotted;
}
