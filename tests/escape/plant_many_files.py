"""Job side of the inode attack on the agent's copy of /work: PROBE_FILES empty files (no bytes, so
no byte budget counts them), each of which would become an inode on the host's disk."""
import os

n = int(os.environ["PROBE_FILES"])
os.mkdir("/work/many")
fd = os.open("/work/many", os.O_RDONLY | os.O_DIRECTORY)
made, stopped = 0, "nothing"
try:
    while made < n:
        os.close(os.open(str(made), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
        made += 1
except OSError as exc:  # an inode limit on the job's tmpfs stops it here: fine, that is a bound too
    stopped = exc.strerror
os.close(fd)
print(f"planted: {made} empty files (stopped by {stopped})", flush=True)
