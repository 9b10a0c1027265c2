"""Job side of the planted-link attack on the agent: leave symlinks in /work that point at host
secrets (/etc/shadow, the agent's tokens file PROBE_TOKENS_FILE, a host file PROBE_VICTIM the test
made), at ../../.., at / and /etc, plus a FIFO, a socket and one ordinary file. The agent copies
/work out and serves downloads after the job ends; the test then asks for each of them."""
import os
import socket

os.symlink("/etc/shadow", "/work/shadow")
os.symlink("/etc/passwd", "/work/passwd")
os.symlink(os.environ["PROBE_TOKENS_FILE"], "/work/tokens")
os.symlink(os.environ["PROBE_VICTIM"], "/work/victim")
os.symlink("../../..", "/work/up")
os.symlink("/", "/work/hostroot")
os.symlink("/etc", "/work/etcdir")
os.makedirs("/work/sub")
os.symlink("../../../../../../etc/passwd", "/work/sub/deep")
os.mkfifo("/work/fifo")
s = socket.socket(socket.AF_UNIX)
s.bind("/work/sock")
with open("/work/ok.txt", "w") as f:
    f.write("ordinary file\n")
print("planted", flush=True)
