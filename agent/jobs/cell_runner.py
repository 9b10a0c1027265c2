"""Runs a notebook cell inside the sandbox (uploaded as /work/.joblet/run.py; standalone on purpose).

It defines the cell's `inputs` as variables, runs the cell as `__main__`, and writes the requested
`outputs` as JSON to /work/.joblet/outputs.json, where the agent picks them up after the job ends.
Values travel as JSON both ways: nothing is pickled.
"""

import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name, default):
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    # line by line, so a notebook sees output as it comes, without one event per print() piece
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    spec = _load("cell.json", {})
    namespace = {"__name__": "__main__", "__file__": "<cell>"}
    namespace.update(_load("inputs.json", {}))
    with open(os.path.join(HERE, "cell.py"), encoding="utf-8") as f:
        source = f.read()
    sys.argv = ["<cell>"]
    sys.path.insert(0, os.getcwd())
    try:
        exec(compile(source, "<cell>", "exec"), namespace)
    except SystemExit:
        raise
    except BaseException:
        etype, value, tb = sys.exc_info()
        traceback.print_exception(etype, value, tb.tb_next)
        sys.exit(1)
    finally:
        sys.stdout.flush()
    wanted = spec.get("outputs", [])
    if wanted:
        values, missing, bad = {}, [], {}
        for name in wanted:
            if name not in namespace:
                missing.append(name)
                continue
            try:
                json.dumps(namespace[name])
                values[name] = namespace[name]
            except (TypeError, ValueError) as exc:
                bad[name] = f"{type(namespace[name]).__name__} is not JSON-serialisable: {exc}"
        with open(os.path.join(HERE, "outputs.json"), "w", encoding="utf-8") as f:
            json.dump({"values": values, "missing": missing, "errors": bad}, f)


if __name__ == "__main__":
    main()
