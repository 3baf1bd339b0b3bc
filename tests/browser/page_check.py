"""Drives sprofd daemon's page in headless Chromium (Playwright for Python), as an engineer
would: the timeline, its memory series and the rows' memory sparklines, a drag over it, a
row's flamegraph, a search, a zoom, Back, and a comparison of two ranges. Run by tests/tests/page.rs, which starts the daemon and the
fixture and checks the figures this prints (one JSON object on stdout).

Usage: page_check.py BASE_URL PID T0 T_BASE_END T_AFTER T_END SHOTS_DIR
  T0..T_BASE_END: the fixture at 75/25 (a3_hot/b3_cold); T_AFTER..T_END: at 25/75 (unix
  seconds).

A step that does not happen in time raises (exit 1, the step named on stderr); the figures
are for the Rust test to judge.
"""

import json
import re
import sys

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main():
    base, pid, t0, t_base_end, t_after, t_end, shots = sys.argv[1:8]
    pid, t0, t_base_end, t_after, t_end = map(int, (pid, t0, t_base_end, t_after, t_end))
    out = {"console_errors": [], "requests_failed": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on(
            "console",
            lambda m: m.type == "error" and out["console_errors"].append(m.text),
        )
        page.on("pageerror", lambda e: out["console_errors"].append(str(e)))
        # Requests cut short by the script's own page.goto (net::ERR_ABORTED) are not failures.
        page.on(
            "requestfailed",
            lambda r: "ERR_ABORTED" not in (r.failure or "")
            and out["requests_failed"].append(f"{r.url}: {r.failure}"),
        )
        page.on(
            "response",
            lambda r: r.status >= 400 and out["console_errors"].append(f"{r.status} {r.url}"),
        )

        # 1. The whole run: the timeline has a series for the fixture; first paint timing.
        whole = f"{base}/?from={t0}&to={t_end}"
        page.goto(whole)
        page.wait_for_selector(f'#timeline polygon.series[data-key="{pid}"]', timeout=10000)
        out["timeline_series"] = page.eval_on_selector_all(
            "#timeline polygon.series", "els => els.map(e => e.dataset.key)"
        )
        out["first_paint_ms"] = page.evaluate(
            "() => (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null"
        )
        page.screenshot(path=f"{shots}/page-timeline.png", full_page=True)
        # Hovering shows the values at that time.
        box = page.locator("#timeline").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "() => / CPUs/.test(document.querySelector('#hover').textContent)", timeout=5000
        )
        out["hover"] = page.text_content("#hover")
        # By command: one series per name.
        page.check('input[name=by][value=comm]')
        page.wait_for_selector('#timeline polygon.series[data-key="cshift"]', timeout=5000)
        out["by_comm_series"] = page.eval_on_selector_all(
            "#timeline polygon.series", "els => els.map(e => e.dataset.key)"
        )
        page.go_back()
        page.wait_for_selector(f'#timeline polygon.series[data-key="{pid}"]', timeout=5000)

        # 1b. Memory: the fixture's row has its sparkline, and the timeline's memory series
        # has the fixture (the axis in MiB, the hover in resident bytes).
        row = f'#processes tr.process[data-pid="{pid}"] td.mem'
        # Attached, not visible: a flat line has an empty box.
        page.wait_for_selector(f"{row} svg.spark polyline", state="attached", timeout=10000)
        out["sparkline_points"] = page.eval_on_selector(
            f"{row} svg.spark polyline", "e => e.getAttribute('points').split(' ').length"
        )
        out["memory_cell"] = page.eval_on_selector(row, "e => e.title + ' | ' + e.textContent")
        page.check("input[name=metric][value=memory]")
        page.wait_for_function(
            "() => document.querySelector('#tl-title').textContent === 'Memory over time'"
            " && /MiB|GiB/.test(document.querySelector('#timeline text.axis').textContent)",
            timeout=10000,
        )
        out["memory_series"] = page.eval_on_selector_all(
            "#timeline polygon.series", "els => els.map(e => e.dataset.key)"
        )
        out["url_memory"] = page.url
        box = page.locator("#timeline").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "() => / resident/.test(document.querySelector('#hover').textContent)", timeout=5000
        )
        out["memory_hover"] = page.text_content("#hover")
        page.screenshot(path=f"{shots}/page-memory.png", full_page=True)
        page.go_back()
        page.wait_for_function(
            "() => / CPUs/.test(document.querySelector('#timeline text.axis').textContent)",
            timeout=10000,
        )

        # 2. A drag over the middle of the chart narrows the range, in the URL.
        box = page.locator("#timeline").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.25, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
        page.mouse.up()
        page.wait_for_function(f"() => !location.search.includes('from={t0}&')", timeout=5000)
        dragged = dict(re.findall(r"[?&](from|to)=(\d+)", page.url))
        out["dragged"] = {k: int(v) for k, v in dragged.items()}
        page.wait_for_function(
            "() => document.querySelector('#range').textContent.includes(new Date(+new URLSearchParams(location.search).get('from') * 1000).toISOString().slice(11, 19))",
            timeout=5000,
        )
        out["range_text_after_drag"] = page.text_content("#range")
        page.go_back()
        page.wait_for_function(f"() => location.search.includes('from={t0}')", timeout=5000)
        out["url_after_back"] = page.url

        # 3. The first phase: a row's flamegraph, in place, within 5 s.
        page.goto(f"{base}/?from={t0}&to={t_base_end}")
        page.evaluate("() => { window.__same_document = true; }")
        page.click(f'#processes tr.process[data-pid="{pid}"] td:nth-child(5)')
        page.wait_for_selector('#flamegraph .f[data-name="a3_hot"]', timeout=5000)
        out["no_navigation"] = page.evaluate("() => window.__same_document === true")
        out["url_after_click"] = page.url
        out["subtitle"] = page.text_content("#subtitle")
        out["selection"] = page.text_content("#selection")

        # 4. Search: the matched share of the selection.
        page.fill("#search", "a3_hot")
        page.wait_for_function(
            "() => /Matched: [0-9.]+%/.test(document.querySelector('#matched').textContent)",
            timeout=5000,
        )
        out["matched_text"] = page.text_content("#matched")
        out["highlighted"] = page.eval_on_selector_all(
            "#flamegraph .f.match", "els => els.map(e => e.title.split('\\n')[0])"
        )
        page.screenshot(path=f"{shots}/page-flamegraph-search.png", full_page=True)

        # 5. A click on a frame zooms (in the URL); Back undoes it, then the row's click.
        page.click('#flamegraph .f[data-name="b1"]')
        page.wait_for_function("() => location.search.includes('zoom=')", timeout=5000)
        out["url_zoomed"] = page.url
        out["zoomed_width"] = page.evaluate(
            "() => document.querySelector('#flamegraph .f[data-name=\"b1\"]').getBoundingClientRect().width"
        )
        out["flame_width"] = page.evaluate(
            "() => document.querySelector('#flamegraph').clientWidth"
        )
        page.go_back()
        page.wait_for_function("() => !location.search.includes('zoom=')", timeout=5000)
        out["url_back_1"] = page.url
        out["unzoomed_width"] = page.evaluate(
            "() => document.querySelector('#flamegraph .f[data-name=\"b1\"]').getBoundingClientRect().width"
        )
        page.go_back()
        page.wait_for_function("() => !location.search.includes('pid=')", timeout=5000)
        out["url_back_2"] = page.url
        page.wait_for_function(
            "() => document.querySelector('#selection').textContent.startsWith('Whole host')",
            timeout=5000,
        )
        out["selection_back_2"] = page.text_content("#selection")

        # 6. Compare the second phase with the first: b3_cold grew.
        page.goto(f"{base}/?from={t_after}&to={t_end}&pid={pid}")
        page.wait_for_selector('#flamegraph .f[data-name="b3_cold"]', timeout=10000)
        page.select_option("#compare", "range")
        page.fill("#base_from", str(t0))
        page.fill("#base_to", str(t_base_end))
        page.click("#base-go")
        page.wait_for_selector("#changes tr.change", timeout=10000)
        out["changes"] = page.eval_on_selector_all(
            "#changes tr.change",
            "rows => rows.map(r => [r.querySelector('.fn').textContent, +r.children[0].textContent, +r.children[1].textContent, +r.children[2].textContent])",
        )
        out["diff_cold_colour"] = page.evaluate(
            "() => getComputedStyle(document.querySelector('#flamegraph .f[data-name=\"b3_cold\"]')).backgroundColor"
        )
        out["url_compare"] = page.url
        page.screenshot(path=f"{shots}/page-compare.png", full_page=True)
        page.go_back()
        page.wait_for_function("() => !location.search.includes('compare=')", timeout=5000)
        page.wait_for_function("() => document.querySelector('#changes').hidden", timeout=5000)
        out["changes_hidden_after_back"] = True

        # 7. Sorting by pid, grouping and the filter.
        page.click('#processes th[data-sort="pid"]')
        page.wait_for_function("() => location.search.includes('sort=pid')", timeout=5000)
        out["pids_sorted"] = page.eval_on_selector_all(
            "#processes tr.process", "rows => rows.map(r => +r.dataset.pid)"
        )
        page.check("#group")
        page.wait_for_selector('#processes tr.group[data-comm="cshift"]', timeout=5000)
        out["group_count"] = page.text_content('#processes tr.group[data-comm="cshift"] td.count')
        # A group's row: its processes open below it, and the flamegraph is the group's.
        page.click('#processes tr.group[data-comm="cshift"] td:nth-child(5)')
        page.wait_for_selector(f'#processes tr.process[data-pid="{pid}"]', timeout=5000)
        page.wait_for_function(
            "() => document.querySelector('#selection').textContent.startsWith('command /^cshift$/')",
            timeout=5000,
        )
        page.wait_for_selector('#flamegraph .f[data-name="b3_cold"]', timeout=10000)
        out["group_url"] = page.url
        page.screenshot(path=f"{shots}/page-group.png", full_page=True)
        page.fill("#filter", "no-such-process-xyz")
        page.wait_for_selector("#processes tr.none", timeout=5000)
        out["filter_empty"] = True
        browser.close()
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line for the Rust test's message
        print(f"page_check: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        raise
