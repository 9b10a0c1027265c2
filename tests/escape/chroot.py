"""Attack: climb out of the root. chroot("/tmp") (the first step of the classic double-chroot
escape) fails with EPERM; "/.." is "/" itself; chdir("..") from / stays at /; the cwd is /work;
fchdir to a descriptor of / opened before does not lead anywhere else."""
import errno
import os

from probelib import call, ename, expect, finish

os.mkdir("/tmp/jnb-probe-jail")
try:
    e = call("chroot", b"/tmp/jnb-probe-jail")
    expect(e == errno.EPERM, f"chroot(/tmp/jnb-probe-jail): {ename(e)} (want EPERM)")
    e = call("chroot", b"/tmp")
    expect(e == errno.EPERM, f"chroot(/tmp): {ename(e)} (want EPERM)")
finally:
    os.rmdir("/tmp/jnb-probe-jail")
expect(os.getcwd() == "/work", f"cwd {os.getcwd()} is /work")
root, up = os.stat("/"), os.stat("/..")
expect((root.st_dev, root.st_ino) == (up.st_dev, up.st_ino), "/.. is / itself")
expect(sorted(os.listdir("/..")) == sorted(os.listdir("/")), "/.. lists what / lists")
fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
for _ in range(20):
    os.chdir("..")
expect(os.getcwd() == "/", f"20 x chdir('..') ends at {os.getcwd()}")
os.fchdir(fd)
os.chdir("../../..")
expect(os.getcwd() == "/" and sorted(os.listdir(".")) == sorted(os.listdir("/")), "fchdir(/) then ../../.. is /")
os.close(fd)
expect(not os.path.exists("/work/main") and not os.path.exists("/../../tmp/jnb-test-marker"), "no host path via ..")
finish()
