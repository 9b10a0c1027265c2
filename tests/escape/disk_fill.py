"""Attack: fill the host's disk through /work and /tmp (PROBE_FILL_MB each, well above the job's
disk_mb = PROBE_DISK_MB). The write must stop with ENOSPC within the job's own size limit; the
file is deleted again."""
import errno
import os

from probelib import ename, expect, finish

fill_mb, disk_mb = int(os.environ["PROBE_FILL_MB"]), int(os.environ["PROBE_DISK_MB"])
chunk = b"\0" * (1 << 20)
for directory in os.environ["PROBE_DIRS"].split(":"):
    path = os.path.join(directory, "jnb-probe-fill")
    written, error = 0, None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while written < fill_mb << 20:
            written += os.write(fd, chunk)
    except OSError as exc:
        error = exc.errno
    finally:
        os.close(fd)
        os.unlink(path)
    expect(error == errno.ENOSPC, f"writing {fill_mb} MiB to {directory}: stopped by {ename(error)} (want ENOSPC)")
    expect(written <= disk_mb << 20, f"{directory} took {written >> 20} MiB, at most the limit of {disk_mb} MiB")
finish()
