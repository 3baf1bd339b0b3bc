"""Live-test fixture for sprof-python: threads parked at known Python call chains.

Usage: python parked.py OUT_DIR [busy]

parked: every thread blocks in threading.Event.wait() at the bottom of a known chain; once all are
parked a short-lived reporter thread writes OUT_DIR/threads.txt (lines "native_id ident")
and OUT_DIR/oracle.txt (faulthandler.dump_traceback(all_threads=True)), then exits.
busy: one thread recurses and computes forever so frames change under the reader; OUT_DIR/ready
is written once it runs.
"""
import asyncio
import faulthandler
import os
import sys
import threading
import time

OUT = sys.argv[1]
MODE = sys.argv[2] if len(sys.argv) > 2 else "parked"
forever = threading.Event()  # never set
parked = []


def park():
    ev = threading.Event()
    parked.append(ev)
    ev.set()
    forever.wait()


# Thread A: a plain deep chain.
def inner():
    park()


def middle():
    inner()


def outer():
    middle()


# Thread B: a non-ASCII name called from a generator driven by next() (a C -> Python entry).
def функция_ü():
    park()


def gen_frames():
    yield 1
    функция_ü()
    yield 2


def chain_b():
    g = gen_frames()
    next(g)
    next(g)


# Thread C: coroutines run by asyncio, and a method (qualname differs from name).
class Worker:
    async def leaf(self):
        park()

    async def run(self):
        await self.leaf()


def chain_c():
    asyncio.run(Worker().run())


def main_chain(n):
    if n:
        return main_chain(n - 1)
    park()


def reporter(expected):
    while len(parked) < expected:
        time.sleep(0.01)
    time.sleep(0.3)  # let every thread get from ev.set() into the blocking acquire
    with open(os.path.join(OUT, "threads.txt.tmp"), "w") as f:
        for t in threading.enumerate():
            if t is not threading.current_thread():
                f.write(f"{t.native_id} {t.ident}\n")
    with open(os.path.join(OUT, "oracle.txt.tmp"), "w") as f:
        faulthandler.dump_traceback(f, all_threads=True)
    os.rename(os.path.join(OUT, "threads.txt.tmp"), os.path.join(OUT, "threads.txt"))
    os.rename(os.path.join(OUT, "oracle.txt.tmp"), os.path.join(OUT, "oracle.txt"))


def busy_leaf(i):
    return sum(j * j for j in range(i % 50))


def busy(n):
    if n:
        return busy(n - 1)
    x = 0
    while True:
        for i in range(1000):
            x += busy_leaf(i)


if MODE == "busy":
    t = threading.Thread(target=busy, args=(12,), daemon=True)
    t.start()
    with open(os.path.join(OUT, "ready.tmp"), "w") as f:
        f.write(str(getattr(t, "native_id", 0)))  # 3.7 has no native_id
    os.rename(os.path.join(OUT, "ready.tmp"), os.path.join(OUT, "ready"))
    forever.wait()
else:
    for target in (outer, chain_b, chain_c):
        threading.Thread(target=target, daemon=True).start()
    threading.Thread(target=reporter, args=(4,), daemon=True).start()
    main_chain(3)
