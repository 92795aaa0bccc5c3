"""The status page (/ on the metrics URL) in a real headless Chromium: it must
render (a screenshot of the right size that is not blank) and its JavaScript
must fill in the member name and the revision from /status.json.

Needs Debian's `chromium` (scripts/install-deps.sh installs it, CHROMIUM_BIN
overrides); without it the tests fail (never skip).

Run: ENGRAM_BIN=build/engram python3 tests/e2e/test_status_page.py -v
"""

import os
import re
import shutil
import struct
import subprocess
import sys
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Server  # noqa: E402

BIN = harness.engram_bin()
WIDTH, HEIGHT = 1280, 900
MEMBER = "status-page-member"


def chromium_bin():
    """Chromium's path ($CHROMIUM_BIN, chromium or chromium-browser), or
    harness.MissingTool: the test fails."""
    if os.environ.get("CHROMIUM_BIN"):
        return harness.need(os.environ["CHROMIUM_BIN"], "chromium")
    return shutil.which("chromium") or shutil.which("chromium-browser") or harness.need("chromium")


def chromium(url, *mode, budget_ms=8000, timeout=120):
    profile = harness.make_temp_dir("e2e-chromium-")
    try:
        argv = [chromium_bin(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--user-data-dir=" + profile, "--window-size=%d,%d" % (WIDTH, HEIGHT),
                "--virtual-time-budget=%d" % budget_ms] + list(mode) + [url]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=harness.clean_env(), preexec_fn=harness._pdeathsig)
        return p
    finally:
        harness.remove_temp_dir(profile)


def decode_png(data):
    """(width, height, rows of (r, g, b) tuples) for 8-bit RGB/RGBA PNGs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, "unsupported PNG %r" % (hdr,)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


class StatusPageTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        chromium_bin()   # missing: this test fails with what to install

    @classmethod
    def setUpClass(cls):
        cls.mport = harness.free_port()
        cls.s = Server(BIN, name=MEMBER, extra_args=["--listen-metrics-urls", "http://127.0.0.1:%d" % cls.mport])
        cls.s.start()
        for i in range(7):
            r = cls.s.ctl("put", "page/%d" % i, "value-%d" % i)
            assert r.rc == 0, r
        r = cls.s.ctl("get", "page/0", "-w", "json")
        cls.revision = r.json()["header"]["revision"]
        cls.url = "http://127.0.0.1:%d/" % cls.mport

    @classmethod
    def tearDownClass(cls):
        cls.s.cleanup()

    def tearDown(self):
        self.assertTrue(self.s.running(), "engram exited:\n" + self.s.log_tail())

    def test_screenshot(self):
        out = os.path.join(self.s.tmp, "status.png")
        p = chromium(self.url, "--screenshot=" + out)
        self.assertTrue(os.path.isfile(out), "no screenshot; chromium rc=%s\n%s" % (p.returncode, p.stderr[-2000:]))
        with open(out, "rb") as f:
            w, h, rows = decode_png(f.read())
        self.assertEqual((w, h), (WIDTH, HEIGHT))
        colours = set()
        total = sq = n = 0
        for y in range(0, h, 2):
            for x in range(0, w, 2):
                r, g, b = rows[y][x]
                colours.add((r, g, b))
                lum = (299 * r + 587 * g + 114 * b) // 1000
                total += lum
                sq += lum * lum
                n += 1
        mean = total / n
        variance = sq / n - mean * mean
        self.assertGreater(len(colours), 64, "screenshot looks blank: %d colours" % len(colours))
        self.assertGreater(variance, 100, "screenshot looks blank: luminance variance %.1f" % variance)
        # the dark header band is there (the page's CSS applied)
        r, g, b = rows[10][WIDTH // 2]
        self.assertLess(r + g + b, 200, "header not dark: %r" % ((r, g, b),))
        if os.environ.get("E2E_KEEP") == "1":
            sys.stderr.write("status page screenshot: %s\n" % out)

    def test_dom_filled_by_js(self):
        p = chromium(self.url, "--dump-dom")
        dom = p.stdout.decode("utf-8", "replace")
        self.assertIn("</html>", dom, "no DOM; chromium rc=%s\n%s" % (p.returncode, p.stderr[-2000:]))
        self.assertRegex(dom, r'id="member-name">%s<' % re.escape(MEMBER))
        self.assertRegex(dom, r'id="revision">%d<' % self.revision)
        self.assertRegex(dom, r'id="health" class="badge ok">healthy<')
        self.assertRegex(dom, r'id="readyz" class="badge ok">ready<')
        self.assertRegex(dom, r'id="raft-term">\d+<')
        self.assertRegex(dom, r'id="db-quota">2\.00 GiB<')
        self.assertRegex(dom, r'id="now-rss">[\d.]+ MiB<')   # parsed from /metrics by the page's JS
        self.assertRegex(dom, r'<div id="error" style="display: none;"></div>')  # every poll succeeded


if __name__ == "__main__":
    unittest.main()
