"""Fixed-work Python workloads for bench/python.sh; each prints "elapsed SECONDS".

usage: pywork.py pure|alt SCALE
  pure  pure-Python call chains: main -> step -> inner -> leaf, ~2 s at SCALE 1
  alt   alternates Python work and native work (zlib.compress) every ~2 ms, ~2 s at SCALE 1
"""

import os
import sys
import time
import zlib


def leaf(n):
    x = 0
    for i in range(n):
        x += i * i % 7
    return x


def inner(n):
    return leaf(n)


def step(n):
    return inner(n)


BLOB = os.urandom(1 << 15) * 2


def py_part():
    return step(60000)  # ~2 ms


def native_part():
    return len(zlib.compress(BLOB * 2, 6))  # ~2 ms in C


def main():
    mode, scale = sys.argv[1], float(sys.argv[2])
    # Profilers attach while the interpreter settles; only the work below is timed.
    time.sleep(0.3)
    t0 = time.monotonic()
    if mode == "pure":
        for _ in range(int(3300 * scale)):
            step(20000)
    elif mode == "alt":
        for _ in range(int(550 * scale)):
            py_part()
            native_part()
    else:
        sys.exit(f"unknown mode {mode}")
    print(f"elapsed {time.monotonic() - t0:.6f}", flush=True)


if __name__ == "__main__":
    main()
