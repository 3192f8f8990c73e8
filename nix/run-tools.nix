# What run steps execute with (enginefab/assemble/sandbox.py looks them up on PATH): bubblewrap,
# proot, and qemu-user under the names Debian gives them (qemu-<arch>-static), for the layer
# derivations of run steps.
#
# qemu-user is nixpkgs' dynamically linked one, not pkgsStatic.qemu-user: the static build
# segfaults at start-up on aarch64-linux (nixpkgs issue 366902, open), which would break every
# x86_64 run step built on an aarch64 machine. A run step for another architecture runs as
# `proot -q qemu-<arch>`, and proot starts qemu on the build's side of the sandbox (where its
# store closure is), so nothing needs qemu to be static.
{ runCommand, bubblewrap, proot, qemu-user }:
runCommand "enginefab-run-tools" { } ''
  mkdir -p $out/bin
  ln -s ${bubblewrap}/bin/bwrap ${proot}/bin/proot $out/bin/
  for arch in aarch64 x86_64; do
    ln -s ${qemu-user}/bin/qemu-$arch $out/bin/qemu-$arch-static
  done
''
