# build/<alias>.json → the image: our builder over the fixed-output fetches, no network.
#
# The derivation runs `enginefab nix build-image`, the same Builder `enginefab build` runs, with
# a fetcher that reads each input from its store path instead of the download cache. $out is an
# OCI image layout (oci-layout, index.json, blobs/sha256/…) holding this one image, tagged with
# its canonical name and alias; its manifest digest equals the CLI's.
{ system, enginefab, runTools }:
let
  inherit (builtins) any concatMap filter fromJSON head listToAttrs map readFile toJSON;
  fetches = import ./fetch.nix { inherit system enginefab; };
in
{ alias, file }:
let
  defn = fromJSON (readFile file);
  inputs = filter fetches.needed (concatMap (layer: layer.inputs or [ ]) defn.layers);
  key = input: if input.sha256 != null then input.sha256 else "awaiting:${input.name}";
  # a base layer with nothing to fetch was never resolved: fail before fetching anything else
  unresolved = map (layer: {
    name = "unresolved:${(head layer.inputs).url}";
    value = fetches.unresolved { inherit alias; input = head layer.inputs; };
  }) (filter (layer: layer.kind == "base" && !(any fetches.needed layer.inputs)) defn.layers);
  fetched = listToAttrs (map (input: { name = key input; value = fetches.fetch input; }) inputs ++ unresolved);
  drv = derivation ({
    name = fetches.storeName alias;
    inherit system;
    builder = "${enginefab}/bin/enginefab";
    args = [ "nix" "build-image" "--definition" definition ];
    # {sha256: store path}: the builder's fetcher looks every input up here
    inputs = toJSON (builtins.mapAttrs (_: d: "${d}") fetched);
    passAsFile = [ "inputs" ];
    ENGINEFAB_QUIET = "1";
  } // (if any (layer: layer.kind == "run") defn.layers then {
    # run steps: bubblewrap, proot, qemu-user (nix/run-tools.nix); nothing else from the host
    PATH = "${runTools}/bin";
  } else { }));
  # only this image's definition, not the whole checkout: editing another file rebuilds nothing
  definition = builtins.path { path = file; name = fetches.storeName "${alias}.json"; };
in
drv // {
  # for people and tests: what the image is and which fixed-output fetches it needs
  passthru = {
    inherit alias fetched;
    image = defn.image;
    fetches = map (input: {
      inherit (input) kind name version sha256 size;
      url = input.url or null;
      drv = fetched.${key input};
    }) inputs;
  };
}
