# Runs in the builder sandbox as an unprivileged user; RUNTIME_PREFIX (/opt/runtimes/python-3.11)
# is the only writable place that is kept. No network needed.
PY=/usr/bin/python3.11
if [ ! -x "$PY" ]; then
    echo "python-3.11 needs $PY (Debian 12: apt-get install python3.11)" >&2
    exit 1
fi
echo "creating a venv from $PY at $RUNTIME_PREFIX/venv"
"$PY" -m venv --without-pip "$RUNTIME_PREFIX/venv"
"$RUNTIME_PREFIX/venv/bin/python3" -c 'import sys; print("venv python", sys.version)'
