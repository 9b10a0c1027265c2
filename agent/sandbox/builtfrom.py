"""Whether a built helper (jnb-init, jnb-holder) was built from the C sources beside this package.

The Python side and the C programs share record formats (initplan.py, holderplan.py). A checkout
updated without running scripts/install.sh keeps the old binaries, and an old jnb-holder reads a
new plan as "bad plan" after the exec: the job is lost. So install.sh stamps each binary with a
digest of the sources it was built from (`<binary>.sources`), and the agent compares that stamp
with the sources it runs beside: a stale jnb-init stops the agent with a clear message, a stale
jnb-holder leaves every job to the Python holder. Where the package carries no C sources (an
installed wheel), there is nothing to compare and the binary is taken as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"jnb-init": "init", "jnb-holder": "holder"}


def sources(binary: str, folder: Path = HERE) -> list[Path]:
    """The C files `binary` is built from (its main file, its `<stem>_*.c`, its header), by name."""
    stem = SOURCES[os.path.basename(binary)]
    found = [folder / f"{stem}.c", folder / f"{stem}.h", *folder.glob(f"{stem}_*.c")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.name)


def digest(binary: str, folder: Path = HERE) -> str | None:
    """sha256 over the sources' names and contents; None where there are none."""
    files = sources(binary, folder)
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        h.update(f"{path.name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def stamp_path(binary: str) -> str:
    return binary + ".sources"


def stale(binary: str, folder: Path = HERE) -> bool:
    """True when `binary` has a stamp of other sources than `folder`'s, or none while they exist."""
    want = digest(binary, folder)
    if want is None:
        return False
    try:
        with open(stamp_path(binary)) as f:
            return f.read().strip() != want
    except OSError:
        return True


def write_stamp(binary: str, folder: Path = HERE) -> None:
    value = digest(binary, folder)
    if value is None:
        raise SystemExit(f"no C sources for {binary} in {folder}")
    tmp = stamp_path(binary) + ".tmp"
    with open(tmp, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, stamp_path(binary))


def main(argv: list[str] | None = None) -> int:
    """install.sh's use: `--stale BINARY` exits 1 when it must be rebuilt; `--stamp BINARY` after."""
    parser = argparse.ArgumentParser(prog="python -m joblet_agent.sandbox.builtfrom")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--stale", metavar="BINARY")
    action.add_argument("--stamp", metavar="BINARY")
    args = parser.parse_args(argv)
    if args.stamp:
        write_stamp(args.stamp)
        return 0
    return 1 if not os.access(args.stale, os.X_OK) or stale(args.stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
