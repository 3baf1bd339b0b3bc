"""The daemon's page over a day of history: its first paint in headless Chromium, and the
answer times of the page and the timeline for the day.

    python3 bench/page_day.py [SPROFD] [WINDOW_FILE]

Builds a data directory holding 8640 copies of WINDOW_FILE as the last day's 10 s windows (by
default a window recorded for the purpose: `sprofd daemon -F 99 --window 2` for 12 s while
bench/cratio runs), starts `SPROFD daemon` on it, waits until the window summaries are warm
(the day's timeline answers with no window missing), then loads `/` and `/?from=-1d` three
times each in Chromium (Playwright, /usr/bin/chromium) and prints the first contentful paint,
and the `curl`-like answer times of `/?from=-1d` and `/api/v1/timeline?from=-1d`.
Not part of `make bench`: a check of the page's "first paint under 300 ms" on this machine.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start(sprofd, data):
    d = subprocess.Popen([sprofd, "daemon", "--listen", "127.0.0.1:0", "--data-dir", data,
                          "--window", "10"], stderr=subprocess.PIPE, text=True)
    for line in d.stderr:
        if "serving http://" in line:
            return d, line.split("serving http://")[1].split("/")[0].strip()
    raise SystemExit("the daemon did not start")


def record_window(sprofd, tmp):
    """One window of a busy host: 12 s of `sprofd daemon -F 99 --window 2` beside cratio."""
    exe = os.path.join(tmp, "cratio")
    subprocess.run(["cc", "-O2", "-g", "-o", exe, os.path.join(ROOT, "bench/cratio.c")], check=True)
    work = subprocess.Popen([exe], stdout=subprocess.DEVNULL)
    data = os.path.join(tmp, "rec")
    d = subprocess.Popen([sprofd, "daemon", "--listen", "127.0.0.1:0", "--data-dir", data,
                          "-F", "99", "--window", "2"], stderr=subprocess.DEVNULL)
    time.sleep(12)
    d.terminate(), d.wait(), work.kill(), work.wait()
    files = sorted(os.listdir(os.path.join(data, "windows")))
    return os.path.join(data, "windows", max(files, key=lambda f: os.path.getsize(os.path.join(data, "windows", f))))


def timed(url):
    t = time.monotonic()
    with urllib.request.urlopen(url) as r:
        body = r.read()
    return time.monotonic() - t, body


def main():
    sprofd = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/sprofd")
    tmp = tempfile.mkdtemp(prefix="sprofd-page-day-")
    try:
        window = sys.argv[2] if len(sys.argv) > 2 else record_window(sprofd, tmp)
        data = os.path.join(tmp, "day")
        d, addr = start(sprofd, data)  # creates the layout with the right owner and modes
        d.terminate(), d.wait()
        blob = open(window, "rb").read()
        now = int(time.time() * 1000) // 10000 * 10000
        for i in range(8640):
            s = now - 86_400_000 + i * 10_000
            path = os.path.join(data, "windows", f"{s}-{s + 10000}.pb.gz")
            with open(path, "wb") as f:
                f.write(blob)
            os.chmod(path, 0o600)
        print(f"a day of windows: 8640 x {len(blob)} B = {8640 * len(blob) / 2**20:.0f} MiB")
        t = time.monotonic()
        d, addr = start(sprofd, data)
        base = f"http://{addr}"
        while True:
            took, body = timed(f"{base}/api/v1/timeline?from=-1d")
            if json.loads(body)["missing_windows"] == 0:
                break
            time.sleep(1)
        print(f"summaries warm {time.monotonic() - t:.1f} s after the start")
        for path in ["/?from=-1d", "/api/v1/timeline?from=-1d"]:
            took, body = timed(base + path)
            print(f"{path}: {took * 1000:.0f} ms, {len(body)} B")
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            errors = []
            for path in ["/", "/?from=-1d"]:
                for i in range(3):
                    page = b.new_page(viewport={"width": 1280, "height": 900})
                    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                    page.goto(base + path)
                    page.wait_for_selector("#timeline polygon.series", timeout=30000)
                    fcp = page.evaluate(
                        "() => performance.getEntriesByName('first-contentful-paint')[0].startTime")
                    drawn = page.evaluate("() => performance.now()")
                    print(f"{path} load {i}: first contentful paint {fcp:.0f} ms, timeline drawn by {drawn:.0f} ms")
                    page.close()
                    time.sleep(2)  # the flamegraph's merge of the last one ends
            print(f"console errors: {errors}")
            b.close()
        d.terminate(), d.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
