"""The flame graphs a notebook saved, as a browser shows them: every `%%sprofd` output of the
notebook (its text/html, as JupyterLab, Notebook and VS Code render it) is opened in Debian's
Chromium through Playwright; the flame graph's script must run inside its iframe (its onload
makes the drawing fluid) and a click on a frame must zoom to it. Run by tests/package/magics.sh: magics_render.py NOTEBOOK.ipynb DIR
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright


def fail(msg):
    print("magics: FAILED: render: %s" % msg, file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    nb_path, d = sys.argv[1], os.path.abspath(sys.argv[2])
    with open(nb_path) as f:
        nb = json.load(f)
    pages = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data and "srcdoc=" in "".join(data["text/html"]):
                path = os.path.join(d, "cell%d.html" % i)
                with open(path, "w") as f:
                    f.write("<!DOCTYPE html><html><body>%s</body></html>" % "".join(data["text/html"]))
                pages.append((i, path))
    if len(pages) < 2:
        fail("%d flame graph outputs in %s, expected 2" % (len(pages), nb_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            for i, path in pages:
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.goto("file://" + path)
                page.wait_for_load_state("load")
                if len(page.frames) != 2:
                    fail("cell %d: %d frames, expected the page and the flame graph's iframe" % (i, len(page.frames)))
                graph = page.frames[1]
                graph.wait_for_selector("#frames g", state="attached", timeout=10000)
                # init() (the SVG's onload) makes the drawing fluid: it drops the fixed width and
                # sets known_font_width (undefined until then); neither happens if the script does not run.
                ran = graph.evaluate(
                    "() => !document.getElementsByTagName('svg')[0].hasAttribute('width')"
                    " && typeof known_font_width === 'number'")
                if not ran:
                    fail("cell %d: the flame graph's script did not run in its iframe" % i)
                labelled = graph.evaluate(
                    "() => Array.from(document.querySelectorAll('#frames text'))"
                    ".filter(t => t.textContent.trim().length > 0).length")
                if graph.evaluate("() => document.getElementById('unzoom').getAttribute('class')") != "hide":
                    fail("cell %d: the flame graph starts zoomed" % i)
                target = "part_b" if i == 2 else "compress_loop"
                # The widest frame of that name: narrower ones (a rare stack through it) may be
                # too small to show, and a click must land on what a person would click.
                frames = graph.locator("#frames g", has_text=target)
                boxes = [(frames.nth(k).bounding_box(), k) for k in range(min(frames.count(), 100))]
                boxes = [(b["width"], k) for b, k in boxes if b and b["width"] > 0 and b["height"] > 0]
                if not boxes:
                    fail("cell %d: no visible frame named %s" % (i, target))
                frames.nth(max(boxes)[1]).click()
                graph.wait_for_timeout(200)
                if graph.evaluate("() => document.getElementById('unzoom').getAttribute('class')") == "hide":
                    fail("cell %d: a click on %s did not zoom" % (i, target))
                table = page.inner_text("pre")
                if "cumulative" not in table:
                    fail("cell %d: no table under the flame graph: %s" % (i, table[:200]))
                print("magics: ok: cell %d renders in Chromium: the flame graph's script ran (%d frames labelled), "
                      "a click on %s zoomed, the table is shown" % (i, labelled, target), flush=True)
                page.close()
        finally:
            browser.close()


if __name__ == "__main__":
    main()
