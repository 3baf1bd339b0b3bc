"""Live-test fixture for sprof-python: threads parked at known Python call chains.

Usage: python parked.py OUT_DIR [busy|moved]

parked: every thread blocks in threading.Event.wait() at the bottom of a known chain; once all are
parked a short-lived reporter thread writes OUT_DIR/threads.txt (lines "native_id ident")
and OUT_DIR/oracle.txt (faulthandler.dump_traceback(all_threads=True)), then exits.
busy: one thread recurses and computes forever so frames change under the reader; OUT_DIR/ready
is written once it runs.
moved: two threads each park in os.open() on a FIFO (OUT_DIR/<name>1) until the reader opens it
for writing, then move on and park on a second FIFO (OUT_DIR/<name>2); OUT_DIR/moved.txt
(lines "name native_id") is written once both run. "deeper" keeps its first chain live and
goes deeper through a C -> Python entry (sorted's key function); "sideways" returns from its
first chain and parks in another one pushed where the first was; "returned" returns from the
inner frames of its first chain and parks in the frame that called them; "activation" parks
in a key function called by sorted() (its own eval activation), then returns from it and
parks in sorted's caller.
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


def fifo(name):
    path = os.path.join(OUT, name)
    os.mkfifo(path)
    return path


if MODE == "moved":
    D1, D2, S1, S2 = fifo("deeper1"), fifo("deeper2"), fifo("sideways1"), fifo("sideways2")
    R1, R2 = fifo("returned1"), fifo("returned2")
    A1, A2 = fifo("activation1"), fifo("activation2")
    RDONLY = os.O_RDONLY


def deeper_key(x):
    fd = os.open(D2, RDONLY)  # chain 2
    os.close(fd)
    return x


def deeper3():
    fd = os.open(D1, RDONLY)  # chain 1: this frame stays live
    os.close(fd)
    sorted([1], key=deeper_key)


def deeper2():
    deeper3()


def deeper():
    deeper2()


def side3():
    fd = os.open(S1, RDONLY)  # chain 1
    os.close(fd)


def side2():
    side3()


def side1():
    # Locals make this frame larger than side_other's, so the popped side2/side3 frames stay
    # above the data stack's top while the thread parks in side_other.
    a = b = c = d = e = f = g = h = 0
    side2()
    return a + b + c + d + e + f + g + h


def side_other():
    fd = os.open(S2, RDONLY)  # chain 2, pushed where side1 was
    os.close(fd)


def sideways():
    side1()
    side_other()


def ret3():
    fd = os.open(R1, RDONLY)  # chain 1
    os.close(fd)


def ret2():
    ret3()


def ret1():
    ret2()
    fd = os.open(R2, RDONLY)  # chain 2: ret2 and ret3 popped, nothing pushed over them
    os.close(fd)


def returned():
    ret1()


def act_key(x):
    fd = os.open(A1, RDONLY)  # chain 1, in an activation entered from sorted()
    os.close(fd)
    return x


def act_caller():
    sorted([1], key=act_key)
    fd = os.open(A2, RDONLY)  # chain 2: the key function's activation returned
    os.close(fd)


def activation():
    act_caller()


if MODE == "moved":
    ts = {name: threading.Thread(target=fn, daemon=True)
          for name, fn in (("deeper", deeper), ("sideways", sideways), ("returned", returned),
                                  ("activation", activation))}
    for t in ts.values():
        t.start()
    with open(os.path.join(OUT, "moved.txt.tmp"), "w") as f:
        for name, t in ts.items():
            f.write(f"{name} {t.native_id}\n")
    os.rename(os.path.join(OUT, "moved.txt.tmp"), os.path.join(OUT, "moved.txt"))
    forever.wait()
elif MODE == "busy":
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
