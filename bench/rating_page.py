"""The rating page in real Chromium: what it transfers, and how fast the next
comparison is on screen after a submit.

    .venv/bin/python -m bench.rating_page --ratings 100 --think-ms 300

Starts the platform as in production (gunicorn with DEBUG off + a Celery
worker, on PostgreSQL + Redis: config/platform.py), seeds a campaign of
120 comparisons without any ML (answers of a few KB of markdown with code),
logs an annotator in through the login form and rates with the keyboard
alone (a choice, a strength where it applies, Enter), pausing --think-ms
after each comparison appears, as a reader would.

Prints:
- bytes the rating page transfers on first load with a cold cache: the sum of
  response bodies (Playwright response events) and what went over the wire
  (CDP Network.loadingFinished encodedDataLength, headers included), up to the
  first comparison on screen and its prefetched successor leased;
- time from the submit key press to the next comparison painted, measured in
  the page (keydown event.timeStamp to the frame after the DOM swap,
  performance.now(), window.__ratchetTimings): median, p95, max, against the
  issue's target, p95 < 50 ms;
- the page's weight on the wire against the issue's target, < 100 KB (KB =
  1,000 bytes): what went over the wire for the first load, each response
  with its Content-Encoding (static files are gzipped by the view that serves
  them, frontend/views.py; the page and the API answers are not).
"""
import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from config.platform import Platform

TARGET_P95_MS = 50.0
TARGET_WEIGHT_BYTES = 100_000
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]

SEED = r'''
from annotate.models import Campaign, PolicyVersion, Prompt, Answer
from annotate.services.rounds import round_open
from django.contrib.auth import get_user_model

user = get_user_model().objects.get(username="bench-annotator")
n = {n}
campaign = Campaign.objects.create(
    name="Rating page bench", overlap=1, comparisons_per_round=n, auto_train=False, status="active",
    base_model="fake/base", instructions="# Instructions\n\nPrefer the **correct** answer, then the clearer one.",
)
campaign.annotators.add(user)
v0 = PolicyVersion.objects.create(campaign=campaign, version=0, path="/nonexistent/v0", sha256="0" * 64)
code = "```python\ndef fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```\n"
para = "The answer explains the idea in plain words, with a reason and an example. " * 6
for i in range(n):
    p = Prompt.objects.create(campaign=campaign, external_id=f"b{{i}}", text=f"Question {{i}}: how do I compute Fibonacci numbers **fast**?")
    Answer.objects.create(prompt=p, policy_version=v0, sample_index=0, text=f"## Answer {{i}}\n\n{{para}}\n\n{{code}}\n\n{{para}}\n\n- one\n- two\n")
    Answer.objects.create(prompt=p, policy_version=v0, sample_index=1, text=f"{{para}}\n\n{{para}}\n\n{{code}}\n\n1. first\n2. second\n\n{{para}}")
round_open(campaign=campaign, index=0, candidate=v0, baseline=v0)
print(campaign.pk)
'''


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratings", type=int, default=100)
    ap.add_argument("--think-ms", type=int, default=300, help="pause after a comparison appears, before the keys")
    ap.add_argument("--headful", action="store_true")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    workdir = Path(tempfile.mkdtemp(prefix="ratchet-rating-bench-"))
    platform = Platform(workdir, backend="services")
    try:
        platform.start()
        platform.user("bench-annotator", "annotator")
        campaign_id = int(platform.manage("shell", "-c", SEED.format(n=args.ratings + 20)).splitlines()[-1])
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=not args.headful)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(30_000)
            # log in (the login page is not counted)
            page.goto(platform.base + "/login/")
            page.keyboard.type("bench-annotator")
            page.keyboard.press("Tab")
            page.keyboard.type("pw-bench-annotator")
            page.keyboard.press("Enter")
            page.wait_for_url(platform.base + "/")

            # first load, cold cache
            wire, responses, encodings = {}, [], {}
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
            cdp.on("Network.loadingFinished", lambda e: wire.__setitem__(e["requestId"], e["encodedDataLength"]))
            cdp.on("Network.responseReceived", lambda e: encodings.__setitem__(e["requestId"], (
                e["response"]["url"].replace(platform.base, ""),
                {k.lower(): v for k, v in e["response"]["headers"].items()}.get("content-encoding", "-"))))
            def on_response(response):
                responses.append(response)

            page.on("response", on_response)
            page.goto(f"{platform.base}/campaigns/{campaign_id}/rate/")
            page.wait_for_selector("main[data-state=rating][data-comparison]")
            # the prefetch is part of the first load: wait for the second next/ answer
            deadline = time.time() + 10
            while sum("/next/" in r.url for r in responses) < 2 and time.time() < deadline:
                page.wait_for_timeout(50)
            page.wait_for_timeout(300)
            rows = []
            for r in responses:
                try:
                    size = len(r.body())
                except Exception:
                    size = 0
                rows.append((r.url.replace(platform.base, ""), r.status, size))
            body_bytes = sum(size for _, _, size in rows)
            first_load = dict(wire)  # the listener goes on counting the ratings' requests
            wire_bytes = sum(first_load.values())
            page.remove_listener("response", on_response)
            cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})

            # ratings with the keyboard
            keys = [("1", "q"), ("2", "w"), ("3", None), ("1", "e"), ("4", None), ("2", "q")]
            shown = None
            started = time.time()
            for i in range(args.ratings):
                if shown is not None:
                    page.wait_for_function(
                        "prev => { const m = document.querySelector('main'); return m.dataset.state === 'rating' "
                        "&& m.dataset.comparison !== String(prev); }", arg=shown)
                shown = page.get_attribute("main", "data-comparison")
                if args.think_ms:
                    page.wait_for_timeout(args.think_ms)
                choice, strength = keys[i % len(keys)]
                page.keyboard.press(choice)
                if strength:
                    page.keyboard.press(strength)
                page.keyboard.press("Enter")
            page.wait_for_function(f"window.__ratchetTimings.length >= {args.ratings}")
            page.wait_for_function("Object.keys(localStorage).every(k => localStorage[k] === '[]')")
            elapsed = time.time() - started
            timings = page.evaluate("window.__ratchetTimings")[: args.ratings]
            browser.close()
        annotator = platform.user("bench-annotator", "annotator")
        status, progress = annotator.get(f"/api/campaigns/{campaign_id}/progress/")
        stored = progress["round"]["ratings"]
    finally:
        platform.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    p95 = percentile(timings, 0.95)
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'bench.rating_page', *sys.argv[1:]])}")
    print("rating page, first load (cold cache, up to the first comparison shown and the next prefetched):")
    for url, code, size in rows:
        print(f"  {code} {size:>8,d} B  {url}")
    print("  on the wire (headers included), per request:")
    for request_id, size in first_load.items():
        url, encoding = encodings.get(request_id, ("?", "-"))
        print(f"  {size:>8,d} B  {encoding:8}  {url}")
    print(f"  bodies: {body_bytes:,d} B in {len(rows)} responses; on the wire (CDP, headers included): {wire_bytes:,d} B"
          f"   (target < {TARGET_WEIGHT_BYTES:,d} B on the wire: {'met' if wire_bytes < TARGET_WEIGHT_BYTES else 'NOT met'})")
    print(f"submit key press -> next comparison painted, {len(timings)} ratings, think time {args.think_ms} ms, loopback:")
    print(f"  median {statistics.median(timings):.1f} ms   p95 {p95:.1f} ms   max {max(timings):.1f} ms"
          f"   (target p95 < {TARGET_P95_MS:.0f} ms: {'met' if p95 < TARGET_P95_MS else 'NOT met'})")
    print(f"  ratings stored: {stored} of {args.ratings}; {elapsed:.1f} s for all, think time included")
    return 0 if stored == args.ratings else 1


if __name__ == "__main__":
    raise SystemExit(main())
