"""A pipe ping-pong between two Python threads, for bench/offcpu.sh: ROUNDS round trips, then
"elapsed SECONDS" (only the ping-pong is timed)."""

import os
import sys
import threading
import time


def pong(r, w, rounds):
    for _ in range(rounds):
        os.write(w, os.read(r, 1))


def ping(r, w, rounds):
    for _ in range(rounds):
        os.write(w, b"x")
        os.read(r, 1)


def main():
    rounds = int(sys.argv[1])
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    t = threading.Thread(target=pong, args=(a_r, b_w, rounds))
    time.sleep(0.3)  # profilers attach while the interpreter settles
    t.start()
    t0 = time.monotonic()
    ping(b_r, a_w, rounds)
    t.join()
    print(f"elapsed {time.monotonic() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
