"""Job side of the sparse-file attack on the agent's copy of /work: a file whose apparent size
(PROBE_APPARENT_MB) is far above the job's disk_mb, but which takes no space in the job's tmpfs
(ftruncate, nothing written). Copied naively, it becomes that many real bytes on the host's disk."""
import os

size = int(os.environ["PROBE_APPARENT_MB"]) << 20
fd = os.open("/work/sparse", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.ftruncate(fd, size)
os.close(fd)
st = os.stat("/work/sparse")
with open("/work/ok.txt", "w") as f:
    f.write("ordinary file\n")
print(f"planted: apparent {st.st_size >> 20} MiB, allocated {st.st_blocks * 512} bytes", flush=True)
