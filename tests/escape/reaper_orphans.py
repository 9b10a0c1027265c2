"""Attack (on the job's own hygiene): leave zombies. A child forks three grandchildren and exits at
once; the orphans are re-parented to PID 1, then exit. PID 1 (the reaper) must reap them: none
stays in state Z, and their /proc entries disappear."""
import os
import time

from probelib import expect, finish, note, status

r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.5)
            os._exit(0)
        os.write(w, f"{pid}\n".encode())
    os._exit(0)
os.close(w)
os.waitpid(child, 0)
orphans = [int(x) for x in os.read(r, 256).split()]
os.close(r)
note(f"orphans {orphans}")
expect(len(orphans) == 3, "three orphans were made")
parents = {pid: status(pid)["PPid"].strip() for pid in orphans if os.path.exists(f"/proc/{pid}")}
expect(parents and all(pp == "1" for pp in parents.values()), f"they were re-parented to PID 1: {parents}")
time.sleep(1.5)
zombies = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            if status(p)["State"].startswith("Z"):
                zombies.append(int(p))
        except OSError:
            pass
expect(zombies == [], f"no zombies in the job: {zombies}")
expect(not any(os.path.exists(f"/proc/{pid}") for pid in orphans), "the orphans are gone (reaped)")
finish()
