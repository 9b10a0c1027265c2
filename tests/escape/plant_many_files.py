"""Job side of the inode attack on the agent's copy of /work: PROBE_FILES empty files (no bytes, so
no byte budget counts them), each of which would become an inode on the host's disk."""
import os

n = int(os.environ["PROBE_FILES"])
os.mkdir("/work/many")
fd = os.open("/work/many", os.O_RDONLY | os.O_DIRECTORY)
for i in range(n):
    os.close(os.open(str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
os.close(fd)
print(f"planted: {n} empty files", flush=True)
