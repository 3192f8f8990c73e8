# What run steps execute with (enginefab/assemble/sandbox.py looks them up on PATH): bubblewrap,
# proot, and qemu-user under the names Debian gives them (qemu-<arch>-static), for the layer
# derivations of run steps.
#
# qemu-user is static (it also serves as a binfmt_misc interpreter inside a root that has no
# store), except on aarch64-linux: there pkgsStatic.qemu-user segfaults at start-up (nixpkgs
# issue 366902, open), which would break every x86_64 run step built on an aarch64 machine, so
# aarch64 builders get the dynamically linked qemu-user. A run step for another architecture runs
# as `proot -q qemu-<arch>`, and proot starts qemu on the build's side of the sandbox, where its
# store closure is, so a dynamic qemu serves there.
{ stdenv, runCommand, bubblewrap, proot, qemu-user, pkgsStatic }:
let
  qemu = if stdenv.hostPlatform.isAarch64 then qemu-user else pkgsStatic.qemu-user;
in
runCommand "enginefab-run-tools" { } ''
  mkdir -p $out/bin
  ln -s ${bubblewrap}/bin/bwrap ${proot}/bin/proot $out/bin/
  for arch in aarch64 x86_64; do
    ln -s ${qemu}/bin/qemu-$arch $out/bin/qemu-$arch-static
  done
''
