# One layer of a definition → one derivation, keyed by exactly what the action cache keys the
# layer by (enginefab/assemble/keys.py): the layer object from the lock (its inputs with their
# sha256, through their fixed-output fetches), the compression contract, SOURCE_DATE_EPOCH, and
# for a run step the layers below it (their derivations). Nothing names the image: every image
# of the matrix with this layer has this same derivation, so it is built once and stored once
# (and, with a binary cache or remote builders, fetched or built once for the whole matrix).
#
# The builder is `enginefab nix build-layer` (enginefab/nix/layer.py), the CLI's own packer; $out
# holds `blob` (the compressed layer) and `descriptor.json` (digest, diff_id, size, media type,
# action key). The derivation's name is the layer id.
{ system, enginefab, runTools, fetches }:
let
  inherit (builtins) filter listToAttrs map toJSON;
  parts = import ./parts.nix;
in
{ defn, layer, lower }:
let
  isRun = layer.kind == "run";
  # the build-only tools of a run step are fetched like its inputs (they are in its key too)
  inputs = filter fetches.needed ((layer.inputs or [ ]) ++ (layer.tools or [ ]));
in
derivation ({
  name = fetches.storeName "layer-${layer.id}";
  inherit system;
  builder = "${enginefab}/bin/enginefab";
  args = [ "nix" "build-layer" ];
  layer = toJSON layer;
  compression = toJSON defn.compression;
  sourceDateEpoch = toString defn.source_date_epoch;
  # {sha256: store path} of the fetches this layer reads
  inputs = toJSON (listToAttrs (map (i: { name = fetches.key i; value = "${fetches.fetch i}"; }) inputs));
  passAsFile = [ "layer" "inputs" ] ++ (if isRun then [ "lower" ] else [ ]);
  ENGINEFAB_QUIET = "1";
} // (if isRun then {
  # a run step executes over the filesystem of the layers below (their outputs, in order), as
  # the image's architecture, with bubblewrap, proot and qemu-user (nix/run-tools.nix) and
  # nothing else on PATH
  lower = toJSON (map parts.wire lower);
  arch = defn.image.arch;
  PATH = "${runTools}/bin";
} else { }))
