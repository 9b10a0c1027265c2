# Runs in the builder sandbox as an unprivileged user. RUNTIME_PREFIX (/opt/runtimes/python-3.11-ml)
# is the only writable place that is kept; /work and /tmp are private and thrown away.
# Download part: pip (a fresh Debian 12 has no python3-pip) and the packages, from PyPI only.
PY=/usr/bin/python3.11
if [ ! -x "$PY" ]; then
    echo "python-3.11-ml needs $PY (Debian 12: apt-get install python3.11)" >&2
    exit 1
fi
VENV="$RUNTIME_PREFIX/venv"
echo "creating a venv from $PY at $VENV"
"$PY" -m venv --without-pip "$VENV"

echo "fetching pip from PyPI"
"$PY" - /tmp/pip.whl <<'PYEOF'
import hashlib, json, sys, urllib.parse, urllib.request
index = "https://pypi.org/pypi/pip/json"
meta = json.load(urllib.request.urlopen(index, timeout=60))
wheel = next(u for u in meta["urls"] if u["packagetype"] == "bdist_wheel")
data = urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=120).read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit("pip wheel: sha256 mismatch")
open(sys.argv[1], "wb").write(data)
print("pip", meta["info"]["version"], len(data), "bytes, sha256 ok")
PYEOF

echo "installing: $RUNTIME_PACKAGES"
# shellcheck disable=SC2086 - RUNTIME_PACKAGES is a list of names
"$VENV/bin/python3" /tmp/pip.whl/pip install --no-cache-dir --only-binary=:all: --disable-pip-version-check \
    --no-warn-script-location --progress-bar off $RUNTIME_PACKAGES
"$VENV/bin/python3" /tmp/pip.whl/pip freeze --disable-pip-version-check > "$VENV/joblet-packages.txt"
cat "$VENV/joblet-packages.txt"

# matplotlib's font lookup (fontconfig) wants a config file; production jobs have no host /etc/fonts
mkdir -p "$VENV/etc/fonts"
printf '<?xml version="1.0"?>\n<fontconfig><dir>/usr/share/fonts</dir><cachedir>/tmp/fontconfig</cachedir></fontconfig>\n' \
    > "$VENV/etc/fonts/fonts.conf"
