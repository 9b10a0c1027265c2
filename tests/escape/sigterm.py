"""Job side of the signal-forwarding test: handle SIGTERM by printing a line and exiting 0."""
import signal
import sys
import time


def on_term(signum, frame):
    print("got SIGTERM, exiting cleanly", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(120)
print("SIGTERM never came", flush=True)
sys.exit(3)
