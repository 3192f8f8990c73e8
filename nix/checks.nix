# `nix flake check`: `enginefab lock --check` (engines/ and build/ agree, nothing is missing) and
# the definition-level compatibility rules of every image. Both offline, run by enginefab itself
# (no shell: the sandbox has none); each writes its JSON report to $out and fails the check when
# it does not pass, printing the report into the build log (`nix log`).
{ system, enginefab, matrix }:
let
  run = name: check: derivation {
    inherit name system;
    builder = "${enginefab}/bin/enginefab";
    args = [ "nix" "flake-check" check "--root" "${matrix}" ];
    ENGINEFAB_QUIET = "1";
  };
in
{
  definitions = run "enginefab-definition-rules" "definitions";
  lock = run "enginefab-lock-check" "lock";
}
