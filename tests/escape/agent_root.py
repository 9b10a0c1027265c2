"""Attack: reach the agent's own root, its tokens file, its client config, log and source.

The paths are the real host paths (PROBE_AGENT_PATHS, ':'-separated); none may exist in the
sandbox, no mount may come from them, and no file named tokens.json (or a jnb-test- folder, which
is how the test agent's root is named) is anywhere in the sandbox's tree. The only mounts from the
agent's root are the published read-only trees jobs run on: the base image at /usr and a runtime's
at /opt/runtimes, each from an `isolated/` folder of `<root>/runtimes/.versions/`.
"""
import os

from probelib import ename, err, expect, finish, mountinfo, note

paths = [p for p in os.environ["PROBE_AGENT_PATHS"].split(":") if p]
for path in paths:
    e = err(os.lstat, path)
    expect(e is not None, f"lstat {path}: {ename(e)}")
root = os.environ["PROBE_AGENT_ROOT"]
published = root + "/runtimes/.versions/"
for m in mountinfo():
    tree = m.root.startswith(published) and "/isolated/" in m.root and (
        m.point == "/usr" or m.point.startswith("/opt/runtimes/")) and "ro" in m.opts
    expect(tree or (root not in m.root and root not in m.point), f"mount {m.point} (from {m.root}) is not the agent's")

hits, seen = [], 0
for top in sorted(os.listdir("/")):
    if top in ("proc", "sys", "dev"):
        continue
    for dirpath, dirnames, files in os.walk("/" + top):
        seen += len(files) + len(dirnames)
        for name in files + dirnames:
            if name in ("tokens.json", "client-config", "admin-token") or name.startswith("jnb-test-"):
                hits.append(os.path.join(dirpath, name))
note(f"walked {seen} names")
expect(seen > 2000, "the walk covered the sandbox's tree")
expect(not hits, f"no agent file is visible: {hits}")
finish()
