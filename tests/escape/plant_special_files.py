"""Job side of the special-file attack on the agent's copy of /work: leave a FIFO, a bound unix
socket, a setuid file, a setgid folder, a sticky world-writable folder (with a setuid file inside),
a symlink and one ordinary file in /work. After the job the agent copies /work to the host's disk
(as root): only regular files and folders may come out, and none with a setuid, setgid or sticky
bit. Harmless: everything stays in the job's own /work."""
import os
import socket
import stat

os.mkfifo("/work/fifo")
s = socket.socket(socket.AF_UNIX)
s.bind("/work/sock")
with open("/work/suid", "w") as f:
    f.write("#!/bin/sh\nid\n")
os.chmod("/work/suid", 0o4755)
os.mkdir("/work/sgid-dir")
os.chmod("/work/sgid-dir", 0o2775)
os.mkdir("/work/sticky")
os.chmod("/work/sticky", 0o1777)
with open("/work/sticky/suid2", "w") as f:
    f.write("x\n")
os.chmod("/work/sticky/suid2", 0o6755)
os.symlink("ok.txt", "/work/link")
with open("/work/ok.txt", "w") as f:
    f.write("ordinary file\n")
for name in ("fifo", "sock", "suid", "sgid-dir", "sticky", "sticky/suid2", "link", "ok.txt"):
    print(f"{name}: {stat.filemode(os.lstat('/work/' + name).st_mode)}", flush=True)
print("planted", flush=True)
