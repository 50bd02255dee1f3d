"""The report site in a real browser: Debian's Chromium, headless, driven by
Playwright (no browser download), opening the bucket folder over file://.

Three generated weeks are imported with `tally import --time-field ts` and
summarized with `--segment-by kind` (week 3 breaks every finding kind). Then
index.html and every week's summary.html must load with no console error,
no page error and no request other than the page itself, every link must
resolve (files exist, #anchors exist), and week 3's warnings must be
visible. Screenshots go to $TALLY_SCREENSHOTS (default: a temp dir;
scripts/browser-test --screenshots writes docs/img/ for the README).

The same site served by `tally serve` (issue 23): the signed link a real
webhook delivery carries opens the week's page, the links between pages
keep working (they carry the token), nothing is requested from anywhere but
the server, and a changed byte in the token or a past expiry gets the 403
page that says how to get a fresh link. `GET /` shows the landing page.

Run with: scripts/browser-test   (needs $TALLY_BIN or builds target/debug/tally)
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import random
import re
import subprocess
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
TALLY = os.environ.get("TALLY_BIN", str(ROOT / "target" / "debug" / "tally"))
CHROMIUM = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
WEEKS = ["2026-W40", "2026-W41", "2026-W42"]


def week_monday(week: str) -> datetime:
    year, w = week.split("-W")
    return datetime.combine(date.fromisocalendar(int(year), int(w), 1), datetime.min.time(), timezone.utc)


def week_lines(week: str, n: int, seed: int, broken: bool) -> list[str]:
    rng = random.Random(seed)
    start = week_monday(week)
    lines = []
    for _ in range(n):
        day = rng.randrange(7)
        if broken and day == 2:
            day = 3  # nothing on Wednesday: a quiet day
        ts = start + timedelta(days=day, milliseconds=rng.randrange(86_400_000))
        rec = {
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "kind": "order" if rng.random() < 0.7 else "refund",
            "country": "jp" if broken and rng.random() < 0.7 else rng.choice(["de", "de", "fr", "us", "jp", "br"]),
            "amount": round(rng.lognormvariate(3.5, 0.5) * (4 if broken else 1), 2),
            "email": None if rng.random() < (0.5 if broken else 0.05) else f"u{rng.randrange(500)}@example.com",
            "zip": str(rng.randrange(10_000, 99_999)) if broken else rng.randrange(10_000, 99_999),
            "latency_ms": round(rng.gammavariate(2.0, 40.0), 1),
            "user": {"id": f"user-{rng.randrange(5000)}", "plan": rng.choice(["free", "pro", "team"])},
        }
        if not broken and rng.random() < 0.3:
            rec["legacy"] = {"v": 1}
        if broken and rng.random() < 0.2:
            rec["coupon"] = "SPRING"
        lines.append(json.dumps(rec, ensure_ascii=False))
    return lines


def tally(*args: str, data_dir: Path) -> None:
    subprocess.run([TALLY, *args, "--data-dir", str(data_dir)], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory) -> Path:
    if not Path(TALLY).is_file():
        pytest.fail(f"{TALLY} not found: build it (cargo build -p tally-cli) or set TALLY_BIN")
    data = tmp_path_factory.mktemp("report")
    lines = (
        week_lines(WEEKS[0], 1500, 1, False)
        + week_lines(WEEKS[1], 1500, 2, False)
        + week_lines(WEEKS[2], 3500, 3, True)
    )
    (data / "history.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tally("import", str(data / "history.ndjson"), "--time-field", "ts", data_dir=data)
    tally("summarize", "--from", WEEKS[0], "--to", WEEKS[-1], "--segment-by", "kind", data_dir=data)
    return data / "bucket" / "summaries"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium (scripts/setup-tools does) or set TALLY_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, path: Path):
    """Loads `path`, recording console errors, page errors and requests."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"console": [], "errors": [], "requests": [], "failed": []}
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("response", lambda r: seen["failed"].append(r.url) if r.status >= 400 else None)
    response = page.goto(path.as_uri())
    assert response is None or response.ok, f"{path} did not load"
    page.wait_for_load_state("load")
    return page, seen


def check_links(page, path: Path) -> int:
    """Every href resolves: relative files exist, #anchors name an element."""
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert hrefs, f"{path}: no links"
    for href in hrefs:
        assert not href.startswith(("http:", "https:", "//")), f"{path}: external link {href}"
        target, _, anchor = href.partition("#")
        file = (path.parent / unquote(target)).resolve() if target else path
        assert file.is_file(), f"{path}: link {href} points at a missing {file}"
        if anchor:
            other = page if file == path else None
            if other is not None:
                assert page.locator(f"[id='{anchor}']").count() == 1, f"{path}: anchor #{anchor} missing"
            else:
                html = file.read_text(encoding="utf-8")
                assert f'id="{anchor}"' in html, f"{path}: anchor {href} missing in {file}"
    return len(hrefs)


def assert_clean(path: Path, seen: dict) -> None:
    assert not seen["console"], f"{path}: console errors {seen['console']}"
    assert not seen["errors"], f"{path}: page errors {seen['errors']}"
    others = [u for u in seen["requests"] if urlparse(u).scheme != "file" or Path(unquote(urlparse(u).path)) != path]
    assert not others, f"{path}: requests besides the page itself: {others}"


def screenshot(page, name: str, full_page: bool = False) -> None:
    out = Path(os.environ.get("TALLY_SCREENSHOTS") or ROOT / "target" / "browser-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / name), full_page=full_page)


def test_the_index_lists_every_week_and_charts_trends(bucket: Path, browser) -> None:
    index = bucket / "index.html"
    page, seen = open_page(browser, index)
    rows = page.locator("table tbody tr")
    assert rows.count() == len(WEEKS)
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(rows.count())] == WEEKS[::-1]
    assert page.locator("svg").count() >= 2, "records per week and at least one field trend"
    # Each trend chart's value axis is labelled with numbers (lowest, highest).
    axis = page.locator("svg text.axis").all_text_contents()
    assert len(axis) >= 2 and all(re.fullmatch(r"-?[0-9][0-9,.e-]*", a) for a in axis), axis
    assert check_links(page, index) >= len(WEEKS)
    screenshot(page, "index.png")
    assert_clean(index, seen)
    page.close()


@pytest.mark.parametrize("week", WEEKS)
def test_each_week_loads_clean_with_working_links(bucket: Path, browser, week: str) -> None:
    path = bucket / week / "summary.html"
    page, seen = open_page(browser, path)
    assert page.locator("h1").inner_text() == f"Week {week}"
    check_links(page, path)
    assert_clean(path, seen)
    # Following the links works in the browser too: previous week and the index.
    for rel in ("prev",):
        link = page.locator(f"a[rel='{rel}']")
        if link.count():
            with page.expect_navigation():
                link.click()
            assert page.url.endswith("/summary.html")
            page.go_back()
    page.locator("a", has_text="All weeks").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/index.html")
    assert not seen["console"] and not seen["errors"], seen
    page.close()


def test_week_three_shows_its_warnings_first_linking_to_their_fields(bucket: Path, browser) -> None:
    path = bucket / WEEKS[2] / "summary.html"
    page, seen = open_page(browser, path)
    warns = page.locator("#findings li.warn")
    assert warns.count() == 7, "every warn kind of the broken week, once (segments folded in)"
    assert warns.first.is_visible()
    kinds = page.locator("#findings li.warn .kind").all_inner_texts()
    assert sorted(kinds) == sorted(
        ["volume", "field_removed", "type_changed", "null_rate", "distribution", "top_values", "quiet_day"]
    )
    assert page.locator("#findings li.info .kind").all_inner_texts() == ["field_added"]
    assert "The same in both `kind` segments." in page.locator("#findings li.warn", has_text="null").inner_text()
    # The findings come before the fields, and a warning's link lands on its field's row.
    assert page.locator("#findings").bounding_box()["y"] < page.locator("#fields").bounding_box()["y"]
    link = page.locator("#findings li.warn a", has_text="zip").first
    target = link.get_attribute("href")
    link.click()
    row = page.locator(f"[id='{target[1:]}']")
    assert row.is_visible() and "zip" in row.locator("td.path").inner_text()
    assert "flagged" in (row.get_attribute("class") or "")
    assert page.locator("#segments").is_visible()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "report.png")
    assert_clean(path, seen)
    page.close()


# --- the site served by `tally serve` -------------------------------------


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: keeps each JSON body it is sent."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(bucket: Path):
    """`tally serve` on the imported weeks, and the notification a real
    webhook delivery of week 3's report carried."""
    data = bucket.parent.parent
    server = subprocess.Popen(
        [TALLY, "serve", "--listen", "127.0.0.1:0", "--no-schedule", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = None
    deadline = time.monotonic() + 30
    while base is None and time.monotonic() < deadline:
        line = server.stderr.readline()
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        base = found.group(1) if found else None
    if base is None:
        server.kill()
        pytest.fail("tally serve did not say where it listens")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Hook.received.clear()
    tally("summarize", "--week", WEEKS[2], "--segment-by", "kind",
          "--notify-url", f"http://127.0.0.1:{hook.server_port}/hook", "--public-url", base, data_dir=data)
    assert len(Hook.received) == 1, Hook.received
    yield base, Hook.received[0], data
    hook.shutdown()
    server.terminate()
    server.wait(timeout=30)


def open_url(browser, url: str):
    """Loads `url`, recording console errors, page errors and requests."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"console": [], "errors": [], "requests": [], "failed": []}
    page.on("console", lambda m: seen["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("response", lambda r: seen["failed"].append(r.url) if r.status >= 400 else None)
    response = page.goto(url)
    page.wait_for_load_state("load")
    return page, response, seen


def assert_served_clean(base: str, seen: dict) -> None:
    # Chromium may ask for /favicon.ico by itself when it shows a document
    # that is not HTML (openapi.json); tally has none, and that 404 is the
    # browser's, not a page's: Playwright does not even report the request.
    # A failed load a page makes is reported, and still fails the test.
    console = seen["console"]
    if all(u == base + "/favicon.ico" for u in seen["failed"]):
        console = [m for m in console if not m.startswith("Failed to load resource")]
    assert not console, f"console errors {console} (failed loads: {seen['failed']})"
    assert not seen["errors"], f"page errors {seen['errors']}"
    elsewhere = [u for u in seen["requests"] if not u.startswith(base + "/")]
    assert not elsewhere, f"requests that left the server: {elsewhere}"


def test_the_link_a_webhook_delivery_carries_opens_the_week_and_its_links_work(served, browser) -> None:
    base, notification, _ = served
    link = notification["report"]
    assert link.startswith(f"{base}/reports/{WEEKS[2]}/?exp="), link
    assert link in notification["text"], "the message people read carries the link"
    page, response, seen = open_url(browser, link)
    assert response.status == 200
    headers = response.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert page.locator("h1").inner_text() == f"Week {WEEKS[2]}"
    assert page.locator("#findings li.warn").count() >= 7
    token = link.split("?", 1)[1]
    # Every link to another page is a route of the site carrying the token.
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    pages = [h for h in hrefs if not h.startswith("#")]
    assert pages and all(h.endswith("?" + token) or ("?" + token + "#") in h for h in pages), pages
    # The previous week, back, then every week from the index.
    with page.expect_navigation():
        page.locator("a[rel='prev']").click()
    assert page.locator("h1").inner_text() == f"Week {WEEKS[1]}"
    assert page.url == f"{base}/reports/{WEEKS[1]}/?{token}"
    page.go_back()
    with page.expect_navigation():
        page.locator("a", has_text="All weeks").click()
    assert page.url == f"{base}/reports/?{token}"
    rows = page.locator("table tbody tr")
    assert rows.count() == len(WEEKS)
    for week in WEEKS:
        with page.expect_navigation():
            page.locator(f"tr[id='{week}'] a").click()
        assert page.locator("h1").inner_text() == f"Week {week}"
        page.go_back()
    assert_served_clean(base, seen)
    page.close()


def test_a_changed_byte_in_the_token_or_a_past_expiry_gets_the_403_page(served, browser) -> None:
    base, notification, data = served
    link = notification["report"]
    last = link[-1]
    tampered = link[:-1] + ("1" if last == "0" else "0")
    # A genuine signature of a past expiry, made with the data directory's
    # secret as tally_core::report_link documents the signed message.
    secret = (data / "report-link.secret").read_text().strip().encode()
    exp = int(time.time()) - 60
    sig = hmac.new(secret, b"tally-report-link-v1\n/reports/\n" + str(exp).encode(), hashlib.sha256).hexdigest()
    expired = f"{base}/reports/{WEEKS[2]}/?exp={exp}&sig={sig}"
    # The same signature with the expiry moved on is not genuine.
    stretched = f"{base}/reports/{WEEKS[2]}/?exp={exp + 86_400 * 365}&sig={sig}"
    for url, title in [
        (tampered, "This report link is not valid"),
        (expired, "This report link has expired"),
        (stretched, "This report link is not valid"),
        (f"{base}/reports/{WEEKS[2]}/", "This page needs a report link"),
    ]:
        page, response, seen = open_url(browser, url)
        assert response.status == 403, url
        assert page.locator("h1").inner_text() == title
        assert f"tally report-link --week {WEEKS[2]}" in page.locator("pre").inner_text()
        # Chromium reports the page's own 403 on the console; nothing else may be there.
        own = "Failed to load resource: the server responded with a status of 403 (Forbidden)"
        assert seen["console"] == [own], seen["console"]
        seen["console"] = []
        assert_served_clean(base, seen)
        page.close()


def test_the_landing_page_says_what_tally_is_and_how_to_get_a_link(served, browser) -> None:
    base, _, _ = served
    page, response, seen = open_url(browser, base + "/")
    assert response.status == 200 and response.headers["content-type"].startswith("text/html")
    text = page.locator("main").inner_text()
    assert "tally" in text and "Health: ok" in text and "tally report-link" in text
    with page.expect_navigation():
        page.locator("a", has_text="openapi.json").click()
    assert page.url == base + "/openapi.json"
    assert_served_clean(base, seen)
    page.close()
