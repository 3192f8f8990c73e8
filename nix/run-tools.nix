# What run steps execute with (enginefab/assemble/sandbox.py looks them up on PATH): bubblewrap,
# proot, and static qemu-user under the names Debian gives them (qemu-<arch>-static), for the
# image derivations of definitions that have run steps.
{ runCommand, bubblewrap, proot, pkgsStatic }:
runCommand "enginefab-run-tools" { } ''
  mkdir -p $out/bin
  ln -s ${bubblewrap}/bin/bwrap ${proot}/bin/proot $out/bin/
  for arch in aarch64 x86_64; do
    ln -s ${pkgsStatic.qemu-user}/bin/qemu-$arch $out/bin/qemu-$arch-static
  done
''
