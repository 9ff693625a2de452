"""One cache of loaded bundles per server: the Label Studio /predict path and /v1 share each load, the
cache is bounded by count (least recently used out first) and a new version replaces the old ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labelpilot.config import Settings
from labelpilot.jobs.training import model_name, train_bundle
from labelpilot.registry import Registry
from labelpilot.registry.cache import VersionCache
from labelpilot.server.app import create_app
from labelpilot.server.deps import Services
from tests.conftest import free_port, sentiment_tasks, wait_for

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>"""
UID = "12.1700000000"


class Loads:
    """A loader that records its calls (and can be slow, or fail once)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.delay = delay
        self.fail_next = False

    def __call__(self, name: str, version: int) -> str:
        time.sleep(self.delay)
        self.calls.append((name, version))
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk hiccup")
        return f"{name}@{version}#{len(self.calls)}"


def test_concurrent_callers_share_one_load() -> None:
    load = Loads(delay=0.3)
    cache: VersionCache[str] = VersionCache(load, max_entries=4)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("a", 1))) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: cache.loading("a", 1), timeout=5, what="the load to start")
    assert cache.peek("a", 1) is None  # peeking never waits for (or starts) a load
    for t in threads:
        t.join(10)
    assert load.calls == [("a", 1)] and cache.loads == 1
    assert got == ["a@1#1"] * 8 and not cache.loading("a", 1)


def test_bounded_by_count_least_recently_used_out() -> None:
    load = Loads()
    cache: VersionCache[str] = VersionCache(load, max_entries=2)
    cache.get("a", 1)
    cache.get("b", 1)
    cache.get("a", 1)  # a hit refreshes "a": "b" is now the least recently used
    cache.get("c", 1)
    assert len(cache) == 2 and cache.keys() == [("a", 1), ("c", 1)]
    assert cache.loads == 3
    cache.get("b", 1)  # pushed out, so loaded again
    assert cache.loads == 4 and cache.keys() == [("c", 1), ("b", 1)]
    with pytest.raises(ValueError):
        VersionCache(load, max_entries=0)


def test_a_new_version_replaces_the_older_ones() -> None:
    load = Loads()
    cache: VersionCache[str] = VersionCache(load, max_entries=8)
    cache.get("a", 1)
    cache.get("b", 1)
    cache.get("a", 2)
    assert cache.keys() == [("b", 1), ("a", 2)] and cache.newest("a") == (2, "a@2#3")
    cache.get("a", 1)  # an old version asked for by number is loaded again, beside the newer one
    assert set(cache.keys()) == {("b", 1), ("a", 2), ("a", 1)} and cache.newest("a") == (2, "a@2#3")
    cache.put("a", 3, "made here")  # e.g. an index saved as a new version
    assert cache.keys() == [("b", 1), ("a", 3)] and cache.peek("a", 3) == "made here"
    cache.forget("a")
    assert cache.keys() == [("b", 1)] and cache.newest("a") is None


def test_a_failed_load_is_not_cached() -> None:
    load = Loads()
    cache: VersionCache[str] = VersionCache(load)
    load.fail_next = True
    with pytest.raises(OSError, match="hiccup"):
        cache.get("a", 1)
    assert len(cache) == 0 and cache.loads == 0 and not cache.loading("a", 1)
    assert cache.get("a", 1) == "a@1#2" and cache.loads == 1


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Services, Registry]]:
    import uvicorn

    settings = Settings(data_dir=tmp_path / "data")
    registry = Registry(settings.data_dir / "registry")
    bundle, report = train_bundle(CONFIG, sentiment_tasks())
    registry.register(model_name(UID), bundle, report=report)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}", app.state.services, registry
    finally:
        server.should_exit = True
        thread.join(10)


def test_label_studio_predict_and_v1_share_the_loaded_bundle(server: tuple[str, Services, Registry]) -> None:
    url, services, registry = server
    assert services.predictor is not None
    bundles = services.predictor.bundles
    assert services.models.bundles is bundles  # type: ignore[attr-defined]  # one cache for both doors
    name = model_name(UID)
    task = {"id": 1, "data": {"text": "great quality, I love it"}}
    with httpx.Client(base_url=url, timeout=60) as client:
        ls = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "project": UID})
        assert ls.status_code == 200, ls.text
        assert ls.json()["results"][0]["model_version"] == registry.get(name, 1).tag
        assert bundles.loads == 1 and bundles.keys() == [(name, 1)]
        v1 = client.post(f"/v1/models/{name}/predict", json={"text": "great quality, I love it"})
        assert v1.status_code == 200, v1.text
        assert v1.json()["version"] == 1 and v1.json()["class_name"] == "Positive"
        assert bundles.loads == 1  # /v1 served the bundle the Label Studio path loaded
        # a retrain registers v2: the first door to ask loads it once, and it replaces v1 in the cache
        bundle, report = train_bundle(CONFIG, sentiment_tasks())
        registry.register(name, bundle, report=report)
        assert client.post(f"/v1/models/{name}/predict", json={"text": "terrible"}).json()["version"] == 2
        assert bundles.loads == 2 and bundles.keys() == [(name, 2)]
        ls2 = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "project": UID})
        assert ls2.json()["results"][0]["model_version"] == registry.get(name, 2).tag
        assert bundles.loads == 2
        # an old version asked for by number is loaded again, beside the serving one, within the bound
        old = client.post(f"/v1/models/{name}/versions/v1/predict", json={"text": "terrible"})
        assert old.status_code == 200 and old.json()["version"] == 1
        assert bundles.loads == 3 and set(bundles.keys()) == {(name, 1), (name, 2)}
        assert len(bundles) <= bundles.max_entries
