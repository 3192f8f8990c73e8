# build/<alias>.json → the image: one derivation per layer (nix/layer.nix), then an assembly.
#
# The image derivation packs nothing: `enginefab nix assemble` (enginefab/nix/assemble.py) writes
# the config and manifest from the layer derivations' descriptors and an OCI layout in $out
# (oci-layout, index.json under the canonical name and alias, blobs/sha256/…) whose layer blobs
# are symlinks to the layer outputs and base fetches. A one-pin change rebuilds the layer holding
# the pin and this assembly; its manifest digest equals `enginefab build`'s.
{ system, enginefab, runTools }:
let
  inherit (builtins) concatMap filter foldl' fromJSON head listToAttrs map readFile toJSON;
  fetches = import ./fetch.nix { inherit system enginefab; };
  layerDrv = import ./layer.nix { inherit system enginefab runTools fetches; };
  parts = import ./parts.nix;
in
{ alias, file }:
let
  defn = fromJSON (readFile file);

  # the parts a layer adds on top of `below` (only a run step's derivation depends on `below`)
  partsOf = below: layer:
    if layer.kind == "base" then
      let blobs = filter (i: fetches.isLayerMedia (i.media_type or null)) layer.inputs; in
      if blobs == [ ] then [{ missing = fetches.unresolved (head layer.inputs); id = layer.id; }]
      else map (i: { blob = fetches.fetch i; digest = "sha256:${i.sha256}"; mediaType = i.media_type; id = layer.id; }) blobs
    else [{ layer = layerDrv { inherit defn layer; lower = below; }; id = layer.id; }];
  all = foldl' (below: layer: below ++ partsOf below layer) [ ] defn.layers;

  # the assembly reads the base's config (for its history); layers come as parts
  configs = filter (i: fetches.needed i && !(fetches.isLayerMedia (i.media_type or null)))
    (concatMap (layer: if layer.kind == "base" then layer.inputs else [ ]) defn.layers);
  # only this image's definition, not the whole checkout: editing another file rebuilds nothing
  definition = builtins.path { path = file; name = fetches.storeName "${alias}.json"; };

  drv = derivation {
    name = fetches.storeName alias;
    inherit system;
    builder = "${enginefab}/bin/enginefab";
    args = [ "nix" "assemble" "--definition" definition ];
    layers = toJSON (map parts.wire all);
    inputs = toJSON (listToAttrs (map (i: { name = fetches.key i; value = "${fetches.fetch i}"; }) configs));
    passAsFile = [ "layers" "inputs" ];
    ENGINEFAB_QUIET = "1";
  };
  needed = filter fetches.needed (concatMap (layer: (layer.inputs or [ ]) ++ (layer.tools or [ ])) defn.layers);
in
drv // {
  # for people and tests: what the image is made of
  passthru = {
    inherit alias;
    image = defn.image;
    # one entry per layer of the definition: its derivation (null for a base layer, whose
    # blobs are fetches)
    layers = map (layer: {
      inherit (layer) id kind;
      drv = let p = filter (p: p.id == layer.id && p ? layer) all; in if p == [ ] then null else (head p).layer;
    }) defn.layers;
    fetches = map (input: {
      inherit (input) kind name version sha256 size;
      url = input.url or null;
      drv = fetches.fetch input;
    }) needed;
  };
}
