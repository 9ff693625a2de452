"""The dashboard at /ui in a real browser: Debian's chromium driven by playwright against a real
`labelpilot serve` on loopback with basic auth on, trained through /setup + START_TRAINING from the stand-in
Label Studio of conftest.py.

Checked: every page loads without console errors (a CSP violation is one) or page errors; the project page
shows the versions, the learning curve, an evaluation's confusion matrix after a training; job progress
updates on an open page while a job runs (no reload); user-controlled text (a label that is HTML) is shown as
text; without (or with wrong) credentials /ui answers 401. The ring buffer behind the traffic page is tested
without a browser.

Screenshots go to ``$LABELPILOT_UI_SCREENSHOTS`` when set (``docs/screenshots`` is made that way, see
README.md *Dashboard*), else to the test's temporary folder. Playwright's ``launch`` gives the browser a fresh
temporary profile (``--user-data-dir``) of its own; it refuses that flag in ``args``.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from labelpilot.registry import ModelVersion
from labelpilot.server import ui
from labelpilot.server.traffic import _N_BINS, BUCKET_SECONDS, TrafficRing
from tests.conftest import LABELPILOT, NEGATIVE, POSITIVE, SENTIMENT_CONFIG, sentiment_tasks, wait_for

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
USER, PASSWORD = "ui-admin", "s3cret-pass"
CREATED = "2023-11-14T22:13:20Z"  # int(timestamp) == 1700000000
UID = "3.1700000000"
PROJECT = {"id": 3, "created_at": CREATED, "label_config": SENTIMENT_CONFIG}
EVIL_LABEL = '<img src=x onerror="alert(1)">'
EVIL_CONFIG = SENTIMENT_CONFIG.replace('value="Negative"', 'value="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"')


# -- the ring buffer of the traffic page (no browser) ----------------------------------------------------
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_traffic_ring_buckets_percentiles_and_bounded_memory() -> None:
    clock = Clock(1_000_000.0)
    ring = TrafficRing(slots=6, clock=clock)
    for i in range(100):  # 1..100 ms in one bucket
        ring.observe((i + 1) / 1000, error=i < 3)
    clock.t += BUCKET_SECONDS
    ring.observe(0.5)
    series = ring.series()
    assert len(series) == 6 and [b["t"] for b in series] == sorted(b["t"] for b in series)
    first, last = series[-2], series[-1]
    assert (first["requests"], first["errors"], first["rps"]) == (100, 3, 10.0)
    # percentiles are read from 10 %-wide bins: within 10 % of the exact figures
    for key, exact in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
        assert abs(first[key] - exact) <= 0.1 * exact, (key, first[key])
    assert last["requests"] == 1 and abs(last["p99_ms"] - 500) <= 50
    assert all(b["requests"] == 0 and b["p50_ms"] is None for b in series[:-2])
    totals = ring.totals()
    assert totals["requests"] == 101 and totals["errors"] == 3 and totals["p99_ms"] >= 95
    # an hour later the ring has come round: old buckets are reused, not kept
    clock.t += 3600
    for _ in range(1000):
        ring.observe(10_000.0)  # slower than the last bin: counted there
    assert ring.totals()["requests"] == 1000 and len(ring._ring) == 6
    assert all(len(b.hist) == _N_BINS for b in ring._ring)
    assert ring.series(last=1)[0]["p50_ms"] > 100_000
    assert len(ring.series(last=10_000)) == 6  # never more than the ring holds


def _mv(version: int, n: int, metrics: dict[str, float], report: dict[str, Any] | None = None) -> ModelVersion:
    return ModelVersion(name="m", version=version, tag=f"text-linear-v{version}-abcdef", created=1.7e9 + version,
                        families=["text-linear"], n_examples=n, labels=["a", "b"], metrics=metrics,
                        report=report or {}, parent=None, path=Path("/nonexistent"), serving=version == 3)


def test_learning_curve_suspects_and_escaping_in_the_project_template() -> None:
    versions = [_mv(1, 5, {"accuracy": 0.5, "macro_f1": 0.4, "n_features": 300.0, "log_loss": 0.9}),
                _mv(2, 20, {"accuracy": 0.7, "macro_f1": 0.65}),
                _mv(3, 20, {"accuracy": 0.75, "macro_f1": float("nan")},
                    {"suspects": [{"task_id": 9, "label": "<script>alert(1)</script>", "score": 0.91234}]})]
    curve = ui.learning_curve(versions)
    by_metric = {s["metric"]: s["points"] for s in curve["series"]}
    # quality metrics only; the same number of annotations keeps the newest figure; NaN is left out
    assert set(by_metric) == {"accuracy", "macro_f1"}
    assert by_metric["accuracy"] == [{"x": 5, "y": 0.5}, {"x": 20, "y": 0.75}]
    assert by_metric["macro_f1"] == [{"x": 5, "y": 0.4}, {"x": 20, "y": 0.65}]
    sus = ui.suspects(versions)
    assert sus is not None and sus["version"] == 3 and sus["columns"] == ["task_id", "label", "score"]
    assert ui.suspects(versions[:2]) is None
    html = ui._env.get_template("model.html").render(
        version="0", page="model", uid=None, project=None, jobs=[], model="m</code><b>x",
        versions=[ui._version_row(v) for v in versions], curve=curve, evaluations=[], suspects=sus, history=[])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "m&lt;/code&gt;&lt;b&gt;x" in html and "0.9123" in html
    # the curve's data block cannot close its <script> element early
    data = html.split('id="curve-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data) == json.loads(json.dumps(curve))


# -- the browser ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make install runs apt-get install chromium as root)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("LABELPILOT_UI_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _shoot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    try:  # small PNGs for the repository: a 128-colour palette is plenty for a dashboard
        from PIL import Image

        with Image.open(path) as img:
            small = img.convert("RGB").quantize(colors=128)
        small.save(path, optimize=True)
    except ImportError:
        pass


class Tab:
    """A page that records console errors, uncaught page errors and dialogs (an XSS would open one)."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text} {m.location}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, url: str) -> Any:
        resp = self.page.goto(url, wait_until="load")
        assert resp is not None and resp.status == 200, (url, resp and resp.status)
        assert "script-src 'self'" in (resp.headers.get("content-security-policy") or "")
        return resp

    def clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.dialogs, self.dialogs


def _big_tasks(n: int) -> list[dict[str, Any]]:
    """Enough annotated tasks that a training run lasts a few seconds (so an open page can watch it)."""
    tasks = []
    for i in range(n):
        label, texts = ("Positive", POSITIVE) if i % 2 else ("Negative", NEGATIVE)
        text = f"{texts[i % len(texts)]} item{i % 997} batch{i % 31} word{i % 3001}"
        tasks.append({"id": i + 1, "data": {"text": text}, "annotations": [{"id": 500000 + i, "result": [
            {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]})
    return tasks


def _evaluate(server: Any, tmp_path: Path) -> subprocess.Popen:
    """Start `labelpilot evaluate` on a small CSV: it stores a report with a confusion matrix in the registry
    (run in the background while the test looks at the other pages)."""
    path = tmp_path / "eval.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(t, "Positive") for t in POSITIVE] + [(t, "Negative") for t in NEGATIVE])
    return subprocess.Popen(
        [str(LABELPILOT), "evaluate", f"ls-project-{UID}", str(path), "--data-dir", str(server.data_dir)],
        env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_dashboard_pages_training_progress_and_auth(start_server, fake_ls, browser, tmp_path: Path) -> None:
    t_start = time.perf_counter()
    shots = _shots(tmp_path)
    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = sentiment_tasks()
    # no text encoder: text-linear is its TF-IDF model alone, which keeps the trainings (and the test) short
    server = start_server(BASIC_AUTH_USER=USER, BASIC_AUTH_PASS=PASSWORD, LABELPILOT_RETRAIN_EVERY="0",
                          LABELPILOT_RETRAIN_SCHEDULE="", LABELPILOT_ENCODER="none",
                          LABELPILOT_AUDIT_MAX_TASKS="1000")  # the first project is audited, the 5,000-task job not
    auth = (USER, PASSWORD)

    # without credentials (or with wrong ones) every /ui route is refused, page, script and JSON alike
    with server.client() as anon:
        for path in ("/ui", "/ui/", f"/ui/projects/{UID}", "/ui/traffic", f"/ui/api/jobs?project={UID}",
                     "/ui/api/traffic", "/ui/static/ui.js"):
            resp = anon.get(path)
            assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Basic"), path
            assert anon.get(path, auth=(USER, "wrong")).status_code == 401, path
    # in the browser: no page without credentials (chromium cancels the basic-auth challenge it cannot answer)
    from playwright.sync_api import Error as PlaywrightError

    print(f"[ui] 401s: {time.perf_counter() - t_start:.1f}s")
    context_anon = browser.new_context()
    try:
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            context_anon.new_page().goto(server.url + "/ui/")
        assert context_anon.request.get(server.url + "/ui/").status == 401
    finally:
        context_anon.close()

    with server.client(auth=auth) as client:
        body = {"project": UID, "schema": SENTIMENT_CONFIG, "hostname": fake_ls.url, "access_token": "setup-token"}
        assert client.post("/setup", json=body).status_code == 200
        evil = {"project": "7.1700000000", "schema": EVIL_CONFIG, "hostname": "http://127.0.0.1:1/<b>x</b>"}
        assert client.post("/setup", json=evil).status_code == 200
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201

        def tag() -> str | None:  # the job's version (the served tag may move from untrained to zero-shot first)
            jobs = client.get("/training", params={"project": UID}).json()["jobs"]
            assert not jobs or jobs[0]["state"] in ("queued", "running", "done"), jobs
            return jobs[0]["version"] if jobs and jobs[0]["state"] == "done" else None

        print(f"[ui] set up, training: {time.perf_counter() - t_start:.1f}s")
        v1 = wait_for(tag, what="the first trained version")
        evaluation = _evaluate(server, tmp_path)
        job = client.get("/training", params={"project": UID}).json()["jobs"][0]
        print(f"[ui] job: waited {job['started'] - job['queued']:.1f}s, ran {job['finished'] - job['started']:.1f}s")
        # /v1 traffic for the traffic page: good requests and a few errors (a missing text is a 422)
        for i in range(25):
            r = client.post(f"/v1/models/ls-project-{UID}/predict", json={"text": POSITIVE[i % len(POSITIVE)]})
            assert r.status_code == 200, r.text
        for _ in range(3):
            assert client.post(f"/v1/models/ls-project-{UID}/predict", json={"txt": "x"}).status_code == 422
    print(f"[ui] trained v1 and sent /v1 traffic: {time.perf_counter() - t_start:.1f}s")

    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                  viewport={"width": 1280, "height": 800})
    try:
        # overview: both projects, their connection state and model version; the HTML label stays text
        tab = Tab(context)
        tab.open(server.url + "/ui/")
        rows = tab.page.locator("#projects tbody tr")
        assert rows.count() == 2
        text = tab.page.locator("#projects").inner_text()
        assert UID in text and v1 in text and fake_ls.url in text and "http://127.0.0.1:1/<b>x</b>" in text
        assert EVIL_LABEL in text and "untrained" in text
        assert tab.page.locator("#projects img").count() == 0
        _shoot(tab.page, shots / "overview.png")
        tab.clean()

        # project page after a training: the version, the curve, the evaluation's confusion matrix
        _, err = evaluation.communicate(timeout=120)
        assert evaluation.returncode == 0, err.decode(errors="replace")[-2000:]
        print(f"[ui] evaluated: {time.perf_counter() - t_start:.1f}s")
        tab = Tab(context)
        tab.open(server.url + f"/ui/projects/{UID}")
        page = tab.page
        assert v1 in page.locator("#versions").inner_text()
        assert page.locator("#versions tr.serving").count() == 1
        curve = page.wait_for_function(
            "() => { const c = window.labelpilotCharts && window.labelpilotCharts.curve;"
            " return c && c.data.datasets.length ? c.data.datasets.map(d => [d.label, d.data.length]) : null; }")
        series = dict(curve.json_value())
        assert "accuracy" in series and series["accuracy"] == 1, series
        assert page.locator(".confusion td").count() == 2 * 3  # 2 labels × (2 labels + "no prediction")
        confusion_total = sum(int(t) for t in page.locator(".confusion td").all_inner_texts())
        assert confusion_total == len(POSITIVE) + len(NEGATIVE)
        # the Start Training job audited the labels: every annotated task is ranked, most suspect first
        assert page.locator("#suspects tbody tr").count() == len(POSITIVE) + len(NEGATIVE)
        head = page.locator("#suspects thead").inner_text()
        assert "score" in head and "suggested" in head
        scores = [float(t) for t in page.locator("#suspects tbody tr td:nth-child(3)").all_inner_texts()]
        assert scores == sorted(scores, reverse=True), scores
        assert page.locator("#jobs tbody tr").first.locator(".state").inner_text() == "done"
        tab.clean()

        # live progress: start a longer job while the page is open; the table follows it without a reload
        page.evaluate("window.__notReloaded = true")
        old_job = page.locator("#jobs tbody tr").first.get_attribute("data-job")
        print(f"[ui] before the live job: {time.perf_counter() - t_start:.1f}s")
        fake_ls.tasks[3] = _big_tasks(5000)
        fake_ls.export_delay = 1.5  # 'fetching annotations' lasts at least one poll, even on an idle machine
        with httpx.Client(base_url=server.url, auth=auth, timeout=10) as client:
            assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        first = page.locator("#jobs tbody tr").first
        seen: list[tuple[str, str]] = []
        shot_running = False
        deadline = time.time() + 60
        while time.time() < deadline:
            if first.get_attribute("data-job") == old_job:
                time.sleep(0.05)
                continue
            state = first.locator(".state").inner_text()
            progress = first.locator(".progress-text").inner_text()
            if not seen or seen[-1] != (state, progress):
                seen.append((state, progress))
            if state == "running" and not shot_running and first.locator("progress").count():
                _shoot(page, shots / "project-training.png")
                shot_running = True
            if state in ("done", "failed"):
                break
            time.sleep(0.1)
        print(f"[ui] live job seen: {seen} at {time.perf_counter() - t_start:.1f}s")
        states = [s for s, _ in seen]
        assert "running" in states and states[-1] == "done", seen
        # the row moved on at least once while the page stayed open (on a busy machine through most of the
        # model's steps: fetching, training on N, featurizing, fitting, refitting, ...)
        assert len(seen) >= 2, seen
        page.locator("#new-version").wait_for(state="visible", timeout=5000)
        assert page.evaluate("window.__notReloaded") is True
        assert int(page.locator("#jobs").get_attribute("data-polled")) >= 2
        tab.clean()
        page.reload()
        assert page.locator("#versions tbody tr").count() == 2
        curve = page.wait_for_function("() => window.labelpilotCharts.curve"
                                       " && window.labelpilotCharts.curve.data.datasets[0].data.length")
        assert curve.json_value() == 2  # two points: 20 and 5,000 annotations
        _shoot(page, shots / "project.png")
        tab.clean()

        # traffic: the 28 /v1 requests and 3 errors in the charts and the totals
        tab = Tab(context)
        tab.open(server.url + "/ui/traffic")
        tab.page.wait_for_function("() => Number(document.body.dataset.trafficPolled || 0) >= 1")
        assert tab.page.locator("[data-total=requests]").inner_text() == "28"
        assert tab.page.locator("[data-total=errors]").inner_text() == "3"
        rps = tab.page.evaluate("window.labelpilotCharts.rps.data.datasets[0].data.reduce((a, b) => a + b, 0)")
        assert abs(rps * 10 - 28) < 1e-6
        p99 = tab.page.evaluate("Math.max(...window.labelpilotCharts.latency.data.datasets[2].data"
                                ".filter(v => v !== null))")
        assert p99 > 0
        _shoot(tab.page, shots / "traffic.png")
        tab.clean()

        # the project with the HTML label: shown as text on its own page too
        tab = Tab(context)
        tab.open(server.url + "/ui/projects/7.1700000000")
        assert EVIL_LABEL in tab.page.locator(".controls").inner_text()
        assert tab.page.locator("main img").count() == 0 and "No version yet" in tab.page.inner_text("#no-versions")
        tab.clean()
    finally:
        context.close()
    # a header-less client with the right pair also works (what a script would do)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with server.client(headers={"Authorization": f"Basic {token}"}) as client:
        assert client.get("/ui/").status_code == 200
        # the dashboard's requests are one route in /metrics, not one series per page
        counted = client.get("/metrics", headers={"accept": "application/json"}).json()
        assert any("route=/ui," in k for k in counted) and not any("route=/ui/" in k for k in counted)
