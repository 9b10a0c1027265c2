# Runs in the builder sandbox, which sees the host's /usr and /var/lib/dpkg read-only. No network:
# the files come from the packages as installed on this host (scripts/install.sh installs the ones
# a fresh Debian 12 lacks). dpkg first verifies every file of each package against the digests it
# recorded at install (a file changed on the host fails the build, naming it); then the files dpkg
# lists for the package are copied into $RUNTIME_PREFIX/usr, links as links, with their modes and
# times (paths under /bin, /sbin and /lib* merged into usr/, as on Debian 12), without /etc or links
# into it (a job gets its own /etc), documentation or manual pages; plus the standard library's compiled bytecode that
# the install made for those files, and OpenSSL's two links to the CA certificates (a job gets
# /etc/ssl/certs). The packages and versions are listed in
# usr/share/joblet/base-packages.txt. Same packages, same versions: same tree.
# shellcheck disable=SC2086 - RUNTIME_PACKAGES is a list of names
status=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $RUNTIME_PACKAGES 2>&1) || true
missing=$(printf '%s\n' "$status" | awk '$2 != "ii" {print $1}')
if [ -n "$missing" ]; then
    echo "not installed on this host: $missing (bash scripts/install.sh installs them)" >&2
    exit 1
fi
# shellcheck disable=SC2086
changed=$(dpkg --verify $RUNTIME_PACKAGES | awk '$2 != "c"') || true
if [ -n "$changed" ]; then
    echo "files differ from what dpkg installed: $changed" >&2
    exit 1
fi
mkdir -p /tmp/lists "$RUNTIME_PREFIX/usr/share/joblet"
for pkg in $RUNTIME_PACKAGES; do
    dpkg-query -L "$pkg" > "/tmp/lists/$pkg"
done
# shellcheck disable=SC2086
dpkg-query -W -f='${Package} ${Version} ${Architecture}\n' $RUNTIME_PACKAGES | sort \
    > "$RUNTIME_PREFIX/usr/share/joblet/base-packages.txt"
python3 - "$RUNTIME_PREFIX" /tmp/lists/* <<'PY'
import os, shutil, sys

prefix, lists = sys.argv[1], sys.argv[2:]
SKIP = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/", "/usr/share/bug/")
MERGED = ("/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/")


def place(path):
    """Where a host path goes in the image: /bin/x -> usr/bin/x, /usr/x -> usr/x."""
    return "usr" + path if path.startswith(MERGED) else path.lstrip("/")


def bytecode(path):
    """The compiled forms of a standard library module that the install left beside it."""
    folder, name = os.path.split(path)
    cache = os.path.join(folder, "__pycache__")
    stem = name[:-3] + ".cpython-"
    try:
        return [os.path.join(cache, f) for f in os.listdir(cache) if f.startswith(stem) and f.endswith(".pyc")]
    except FileNotFoundError:
        return []


paths = set()
for name in lists:
    paths.update(line.rstrip("\n") for line in open(name) if line.startswith("/"))  # not "diverted by"
paths.update(pyc for p in list(paths) if p.startswith("/usr/lib/python3") and p.endswith(".py") for pyc in bytecode(p))
copied = size = 0
for path in sorted(paths):
    if path.startswith(SKIP) or not path.startswith(("/usr/",) + MERGED) or not os.path.lexists(path):
        continue
    if os.path.isdir(path) and not os.path.islink(path):
        continue
    if os.path.islink(path) and os.readlink(path).startswith("/etc/"):
        continue  # a job has its own /etc, where this would point nowhere
    dest = os.path.join(prefix, place(path))
    if os.path.lexists(dest):
        continue
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), dest)
    else:
        shutil.copy2(path, dest)
        size += os.path.getsize(dest)
    copied += 1
# where OpenSSL looks for CA certificates (links the openssl package makes, not its programs)
os.makedirs(os.path.join(prefix, "usr/lib/ssl"), exist_ok=True)
os.symlink("/etc/ssl/certs", os.path.join(prefix, "usr/lib/ssl/certs"))
os.symlink("/etc/ssl/certs/ca-certificates.crt", os.path.join(prefix, "usr/lib/ssl/cert.pem"))
# the one alternative of these packages scripts call by its generic name (dpkg's alternatives live
# in /etc, which the image leaves out): awk is mawk
if os.path.exists(os.path.join(prefix, "usr/bin/mawk")) and not os.path.lexists(os.path.join(prefix, "usr/bin/awk")):
    os.symlink("mawk", os.path.join(prefix, "usr/bin/awk"))
print(f"base: {copied} files and links, {size / 1e6:.1f} MB, from {len(lists)} packages")
PY
