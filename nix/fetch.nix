# One pinned input of build/<alias>.json → one fixed-output derivation with the lock's sha256.
#
#   wheel, deb, url   builtin:fetchurl of the locked URL (Nix's own fetcher; it tries the
#                     `hashed-mirrors` setting first, e.g. enginefab's download cache)
#   oci               a base-image blob by digest, fetched by `enginefab nix fetch-blob`, which
#                     speaks the registry protocol (token auth, mirrors) that a plain URL cannot
#   manual            requireFile: the user downloads the file and adds it with
#                     `nix-store --add-fixed sha256 FILE`; building it otherwise fails with a
#                     message saying where to get it (`enginefab nix missing-input`)
#   manual, no hash   (awaiting) always fails, saying how to pin the file first
#   run               not fetched: its hash identifies the step, it is part of the layer
#
# No shell and no nixpkgs: builtin:fetchurl, or enginefab as the builder. Fixed-output paths
# depend on name and hash alone, so any mirror, URL or fetcher yields the same store paths.
{ system, enginefab }:
let
  inherit (builtins) concatStringsSep filter isString split substring baseNameOf;

  # store path names allow [A-Za-z0-9+._?=-], must not start with a dot, and are short
  storeName = s:
    let
      clean = concatStringsSep "_" (filter isString (split "[^A-Za-z0-9+._?=-]+" s));
      safe = if substring 0 1 clean == "." then "_" + clean else clean;
    in
    substring 0 180 safe;

  fileName = input:
    if input ? filename then input.filename
    else if (input.url or null) != null then baseNameOf input.url
    else "${input.name}-${input.version}";

  proxies = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" ];

  fixed = sha256: {
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = sha256;
    preferLocalBuild = true;
  };

  url = input: derivation (fixed input.sha256 // {
    name = storeName (fileName input);
    system = "builtin";
    builder = "builtin:fetchurl";
    url = input.url;
    urls = [ input.url ];
    executable = false;
    unpack = false;
    impureEnvVars = proxies;
  });

  oci = input: derivation (fixed input.sha256 // {
    name = storeName "blob-${substring 0 16 input.sha256}-${input.name}";
    inherit system;
    builder = "${enginefab}/bin/enginefab";
    args = [ "nix" "fetch-blob" input.url "--size" (toString input.size) ];
    ENGINEFAB_QUIET = "1";
    impureEnvVars = proxies ++ [ "ENGINEFAB_MIRRORS" ];
  });

  # derivations that always fail, saying what the user must do: `enginefab nix missing-input`
  # (enginefab/nix/missing.py) writes the error. Not a shell: the sandbox has no /bin/sh.
  failing = { name, kind, input }: {
    inherit name system;
    builder = "${enginefab}/bin/enginefab";
    args = [ "nix" "missing-input" kind ];
    input = builtins.toJSON input;
    ENGINEFAB_QUIET = "1";
    preferLocalBuild = true;
    allowSubstitutes = false;
  };

  # The name is the file's own name: `nix-store --add-fixed sha256 FILE` then yields exactly
  # this output path, so the derivation is already valid and never runs.
  manual = input: derivation (failing { name = fileName input; kind = "manual"; inherit input; } // fixed input.sha256);

  awaiting = input: derivation (failing {
    name = storeName "awaiting-${fileName input}";
    kind = "awaiting";
    inherit input;
  });

  # a base pinned by digest whose layers were never resolved (registry unreachable at lock
  # time); named after the base alone, so that every image on it shares it
  unresolved = input: derivation (failing {
    name = storeName "unresolved-base-${input.name}";
    kind = "unresolved";
    inherit input;
  });

  # a package from an apt repository that was out of reach at lock time: no URL or size yet
  unpinned = input: derivation (failing {
    name = storeName "unpinned-deb-${input.name}";
    kind = "unpinned";
    inherit input;
  });

  isLayerOrConfig = mt:
    mt != null && (builtins.match ".*(\\.layer\\.|\\.rootfs\\.diff\\.|image\\.config\\.|container\\.image\\.).*" mt != null);
in
{
  inherit storeName fileName unresolved;

  # the name an input has in a derivation's {sha256: store path} map
  key = input: if input.sha256 != null then input.sha256 else "awaiting:${input.name}";

  # a base-image layer blob, not its config (enginefab/assemble/keys.py `is_layer_media`)
  isLayerMedia = mt: mt != null && builtins.match ".*(\\.layer\\.|\\.rootfs\\.diff\\.).*" mt != null;

  # does building the image read this input's bytes? (an oci base's index and manifest are
  # pinned for provenance; the builder reads only its config and layers)
  needed = input:
    if input.kind == "run" then false
    else if input.kind == "oci" then isLayerOrConfig (input.media_type or null)
    else true;

  # the derivation that provides the input's bytes
  fetch = input:
    # a git input's archive is made by enginefab from the verified tree (`enginefab build` puts it
    # in the download cache; `nix-store --add-fixed sha256` it like a manual file)
    if input.kind == "manual" || input.kind == "git" then (if input.sha256 == null then awaiting input else manual input)
    else if input.kind == "oci" then oci input
    else if input.kind == "deb" && input.url == null then unpinned input
    else if input.url == null then throw "enginefab: ${input.kind} input ${input.name} has no URL in its definition"
    else url input;
}
