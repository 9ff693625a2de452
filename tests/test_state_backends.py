"""ProjectStore on both back ends (issue 14): SQLite in a tmp data dir, PostgreSQL in a throwaway database on
the real server at 127.0.0.1:5432. Every test runs on both; racing claimers and a dead process are real
processes (spawned), not simulated."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labelpilot.config import Settings
from labelpilot.jobs.state import ProjectStore
from tests.conftest import wait_for
from tests.test_pgdb import throwaway_database

_db_numbers = itertools.count()

Factory = Callable[..., ProjectStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Keyword arguments of ProjectStore for one fresh, empty back end."""
    if request.param == "sqlite":
        yield {"data_dir": tmp_path, "database_url": None}
        return
    name = f"labelpilot_state_{os.getpid()}_{next(_db_numbers)}"
    with throwaway_database(name) as url:
        yield {"data_dir": tmp_path, "database_url": url}


@pytest.fixture
def open_store(backend: dict[str, Any]) -> Iterator[Factory]:
    opened: list[ProjectStore] = []

    def _open(heartbeat: float = 5.0) -> ProjectStore:
        opened.append(ProjectStore(backend["data_dir"], database_url=backend["database_url"], heartbeat=heartbeat))
        return opened[-1]

    yield _open
    for store in opened:  # before the throwaway database goes
        store.close()


def test_the_setting_picks_the_back_end(backend: dict[str, Any]) -> None:
    settings = Settings(data_dir=backend["data_dir"], database_url=backend["database_url"], job_heartbeat=0.5)
    store = ProjectStore.from_settings(settings)
    assert store.backend.name == ("postgresql" if backend["database_url"] else "sqlite")
    assert store.heartbeat == 0.5
    assert (backend["data_dir"] / "state.sqlite3").exists() == (backend["database_url"] is None)


def test_database_url_must_be_postgresql() -> None:
    with pytest.raises(ValueError, match="database_url"):
        Settings(database_url="mysql://somewhere/db")
    assert Settings(database_url="").database_url is None


def test_projects(open_store: Factory) -> None:
    store = open_store()
    assert store.upsert_project("7.1700000000", label_config="<View/>", hostname="http://ls.example:8080",
                                access_token="tok", extra_params={"families": {"c": "text-linear"}}) is False
    store.upsert_project("8.1700000001", authed=True)
    # a new origin without a new token clears the stored token (it must never reach another host)
    assert store.upsert_project("7.1700000000", hostname="http://other.example") is True
    p = store.project("7.1700000000")
    assert p is not None
    assert (p["label_config"], p["hostname"], p["access_token"]) == ("<View/>", "http://other.example", None)
    assert p["extra_params"] == {"families": {"c": "text-linear"}}
    assert store.project("8.1700000001")["authed"] == 1
    assert store.project("nope") is None
    assert set(store.project_uids()) == {"7.1700000000", "8.1700000001"}
    assert open_store().project("7.1700000000") == p  # another connection sees the same committed row


def test_webhook_copies(open_store: Factory) -> None:
    store = open_store()
    task = {"id": 10, "data": {"text": "很好"}}
    ann = {"id": 100, "result": [{"value": {"choices": ["Positive"]}}]}
    assert store.record_annotation_event("p", put=[(task, ann), ({"id": 11, "data": {}}, {"id": 101})]) == 1
    # the same annotation again replaces it; ids that are not integers are skipped
    assert store.record_annotation_event("p", put=[(task, {**ann, "result": []}), (task, {"id": "x"})]) == 2
    store.put_annotation("p", {"id": 12, "data": {"text": "b"}}, {"id": 102})
    assert store.count_annotations("p") == 3
    assert store.tasks("p")[0] == {"id": 10, "data": {"text": "很好"}, "annotations": [{"id": 100, "result": []}]}
    assert store.record_annotation_event("p", delete=[101, 999], count=1) == 3
    assert store.delete_annotations("p", [102, 998]) == 1
    assert [t["id"] for t in store.tasks("p")] == [10]
    assert store.count_annotation_event("p", 2) == 5
    store.reset_counter("p")
    assert store.count_annotation_event("p", 0) == 0

    since = time.time()
    time.sleep(0.01)
    store.put_annotation("p", {"id": 13, "data": {}}, {"id": 103})  # delivered while the export ran: kept
    export = [{"id": 20, "data": {"text": "x"}, "annotations": [{"id": 200}, {"id": 201}], "predictions": [1]}]
    assert store.replace_tasks("p", export, since=since) == 2
    assert [(t["id"], [a["id"] for a in t["annotations"]]) for t in store.tasks("p")] == [(13, [103]), (20, [200, 201])]
    assert "predictions" not in store.tasks("p")[1]
    assert store.project("p")["synced"] == 1


def test_incremental_refresh_replaces_only_the_changed_tasks(open_store: Factory) -> None:
    store = open_store()
    export = [{"id": 1, "data": {"t": "a"}, "annotations": [{"id": 10}, {"id": 11}]},
              {"id": 2, "data": {"t": "b"}, "annotations": [{"id": 20}]},
              {"id": 3, "data": {"t": "c"}, "annotations": [{"id": 30}]}]
    store.upsert_project("p", label_config="<View/>")
    store.replace_tasks("p", export, since=time.time(), synced_at=1000.0)
    assert store.project("p")["synced_at"] == 1000.0
    since = time.time()
    time.sleep(0.01)
    store.put_annotation("p", {"id": 3, "data": {"t": "c"}}, {"id": 30, "result": ["webhook"]})  # after since: kept
    # task 1 lost annotation 11 and changed 10; task 2 has none left; task 3's export is older than the webhook
    changed = [{"id": 1, "data": {"t": "a2"}, "annotations": [{"id": 10, "result": ["new"]}], "predictions": [{}]},
               {"id": 2, "data": {"t": "b"}, "annotations": []},
               {"id": 3, "data": {"t": "c"}, "annotations": [{"id": 30, "result": ["export"]}]},
               {"id": 9, "data": {}, "annotations": [{"id": 90}]}]  # not asked for: ignored
    assert store.refresh_tasks("p", changed, [1, 2, 3], since=since) == 2
    got = {t["id"]: t for t in store.tasks("p")}
    assert sorted(got) == [1, 3]
    assert got[1] == {"id": 1, "data": {"t": "a2"}, "annotations": [{"id": 10, "result": ["new"]}]}
    assert got[3]["annotations"] == [{"id": 30, "result": ["webhook"]}]
    store.mark_synced("p", 2000.5)
    assert store.project("p")["synced_at"] == 2000.5 and store.project("p")["synced"] == 1
    store.replace_tasks("p", export)  # a full export that could not read Label Studio's clock: next sync is full
    assert store.project("p")["synced_at"] is None


def test_enqueue_claim_finish(open_store: Factory) -> None:
    store, other = open_store(), open_store()
    first, deferred = store.claim_or_defer("p", "START_TRAINING", full_export=False)
    assert not deferred and store.job(first)["state"] == "queued" and store.job(first)["owner"] == store.owner
    assert other.claim_or_defer("p", "10 annotations", full_export=True) == (first, True)
    assert store.claim_or_defer("p", "START_TRAINING", full_export=False) == (first, True)  # coalesced
    job = other.claim(first)
    assert job is not None and job["state"] == "running" and job["owner"] == other.owner and job["uid"] == "p"
    assert store.claim(first) is None  # claimed already: a second runner never gets it
    nxt = other.finish_and_next(first, state="done", version="v1", report={"ok": True})
    assert nxt is not None and nxt[1] is True  # the follow-up keeps the strongest request (a full export)
    done = store.job(first)
    assert (done["state"], done["version"], done["report"]) == ("done", "v1", {"ok": True})
    assert store.done_since(done["finished"]) == [(first, "p", done["finished"])]
    assert store.next_queued("p", after=first) == nxt
    q, _ = store.claim_or_defer("q", "START_TRAINING", full_export=False)
    oldest = store.claim()  # no id: the oldest queued job of any project
    assert oldest is not None and oldest["id"] == nxt[0]
    assert store.claim()["id"] == q and store.claim() is None
    assert store.finish_and_next(nxt[0], state="failed", error="boom") is None
    assert [j["state"] for j in store.jobs("p")] == ["failed", "done"]


def test_a_fenced_end_and_a_requeue_move_only_the_named_owners_running_job(open_store: Factory) -> None:
    """The dead-job sweep's two moves (jobs.recovery): each one conditional UPDATE that says whether it moved."""
    runner, sweeper = open_store(), open_store()
    job_id, _ = runner.claim_or_defer("p", "START_TRAINING", full_export=False)
    assert runner.claim(job_id) is not None
    assert sweeper.running_jobs() == [{"id": job_id, "uid": "p", "owner": runner.owner,
                                       "heartbeat": runner.job(job_id)["heartbeat"], "attempts": 1,
                                       "full_export": 0}]
    assert sweeper.end_job(job_id, "someone-else", state="failed", error="x") == (False, None)
    assert not sweeper.requeue(job_id, "someone-else", queue_owner="rq:q", progress="again", error="x")
    assert runner.job(job_id)["state"] == "running"
    assert sweeper.requeue(job_id, runner.owner, queue_owner="rq:q", progress="again", error="attempt 1: died")
    job = runner.job(job_id)
    assert (job["state"], job["owner"], job["progress"], job["error"]) == ("queued", "rq:q", "again", "attempt 1: died")
    assert not sweeper.requeue(job_id, runner.owner, queue_owner="rq:q", progress="again", error="x")  # moved once
    assert runner.claim(job_id) is not None and runner.claim_or_defer("p", "10 annotations", full_export=True)[1]
    moved, nxt = sweeper.end_job(job_id, runner.owner, state="failed", error="worker died mid-job")
    assert moved and nxt is not None and nxt[1] is True  # the coalesced request follows, owned by the sweeper
    assert runner.job(job_id)["state"] == "failed" and runner.job(nxt[0])["owner"] == sweeper.owner
    assert runner.finish_and_next(job_id, fence=True, state="done") is None  # the silent runner records nothing
    assert runner.job(job_id)["state"] == "failed"


def test_at_most_one_active_job_a_project_is_a_database_rule(open_store: Factory) -> None:
    store = open_store()
    store.claim_or_defer("p", "x", full_export=False)
    # what a buggy or foreign writer would do
    with pytest.raises(Exception, match=r"(?i)unique"), store._tx() as db:
        db.execute("INSERT INTO jobs(uid, reason, state, queued) VALUES ('p', 'y', 'running', 0)")


def _claim_all(kwargs: dict[str, Any], start: Any, out: Any) -> None:
    store = ProjectStore(kwargs["data_dir"], database_url=kwargs["database_url"])
    start.wait(30)
    mine = []
    while (job := store.claim()) is not None:
        mine.append(job["id"])
    out.put((store.owner, mine))


def _submit_many(kwargs: dict[str, Any], uids: list[str], start: Any, out: Any) -> None:
    store = ProjectStore(kwargs["data_dir"], database_url=kwargs["database_url"])
    start.wait(30)
    out.put([store.claim_or_defer(uid, "race", full_export=False) for uid in uids])


def _run_processes(target: Callable[..., None], args_each: list[tuple[Any, ...]]) -> list[Any]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, out)) for args in args_each]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let both import and connect, then release them together
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def test_two_processes_claiming_take_each_job_once(backend: dict[str, Any], open_store: Factory) -> None:
    store = open_store()
    ids = [store.claim_or_defer(f"project-{i}", "x", full_export=False)[0] for i in range(60)]
    results = _run_processes(_claim_all, [(backend,), (backend,)])
    claimed = [job_id for _, mine in results for job_id in mine]
    assert sorted(claimed) == sorted(ids)  # every job once: none twice, none lost
    for owner, mine in results:
        assert all(store.job(j)["owner"] == owner and store.job(j)["state"] == "running" for j in mine)


def test_two_processes_queueing_one_project_make_one_job(backend: dict[str, Any], open_store: Factory) -> None:
    uids = [f"project-{i}" for i in range(15)]
    results = _run_processes(_submit_many, [(backend, uids), (backend, uids[::-1])])
    store = open_store()
    for uid in uids:
        jobs = store.jobs(uid)
        assert len(jobs) == 1 and jobs[0]["state"] == "queued"
        answers = [a for r in results for a in r if a[0] == jobs[0]["id"]]
        assert sorted(d for _, d in answers) == [False, True]  # one queued it, the other was deferred
        assert store.finish_and_next(jobs[0]["id"], state="done") is not None  # the deferred request follows


def _claim_then_die(kwargs: dict[str, Any], job_id: int, start: Any, out: Any) -> None:
    store = ProjectStore(kwargs["data_dir"], database_url=kwargs["database_url"], heartbeat=0.2)
    start.wait(30)
    out.put(store.claim(job_id) is not None)
    time.sleep(0.5)  # a few heartbeats, then the process dies without finishing (as under SIGKILL)
    os._exit(0)


def test_a_dead_process_s_job_is_interrupted_a_live_one_is_left_alone(
    backend: dict[str, Any], open_store: Factory
) -> None:
    live = open_store(heartbeat=0.2)
    dead_job, _ = live.claim_or_defer("dead", "x", full_export=False)
    assert _run_processes(_claim_then_die, [(backend, dead_job)]) == [True]
    live_job, _ = live.claim_or_defer("live", "x", full_export=False)
    assert live.claim(live_job) is not None
    queued_job, _ = live.claim_or_defer("waiting", "x", full_export=False)  # queued, its owner alive
    live.claim_or_defer("dead", "follow-up", full_export=True)
    live.claim_or_defer("live", "follow-up", full_export=True)
    beat_before = live.job(live_job)["heartbeat"]
    time.sleep(1.0)
    assert live.job(live_job)["heartbeat"] > beat_before  # the live store's thread beats while it owns jobs

    starting = open_store()  # a replica starting now, on the machine of the dead process: no need to wait
    assert starting.interrupt_unfinished(stale_after=3600) == 1
    dead = starting.job(dead_job)
    assert dead["state"] == "interrupted" and "pid" in dead["error"] and dead["finished"] is not None
    assert starting.job(live_job)["state"] == "running" and starting.job(queued_job)["state"] == "queued"
    assert live.finish_and_next(live_job, state="done") is not None  # its follow-up request survived
    # the dead job's follow-up went with it; the project takes new jobs again
    job, deferred = starting.claim_or_defer("dead", "again", full_export=False)
    assert not deferred and starting.finish_and_next(job, state="done") is None
    assert starting.interrupt_unfinished(stale_after=1.0) == 0


def _foreign(store: ProjectStore, uid: str, heartbeat_age: float) -> int:
    """A running job owned by a process of another machine (its pid cannot be checked from here)."""
    job_id, _ = store.claim_or_defer(uid, "x", full_export=False)
    store.update_job(job_id, state="running", owner="elsewhere:0123456789:4242:cafe0000",
                     heartbeat=time.time() - heartbeat_age)
    return job_id


def test_another_machine_s_job_is_interrupted_once_its_heartbeat_is_stale(open_store: Factory) -> None:
    store = open_store()
    silent, recent = _foreign(store, "silent", 120), _foreign(store, "recent", 5)
    assert store.interrupt_unfinished(stale_after=60) == 1
    assert store.job(silent)["state"] == "interrupted" and "no heartbeat for 60 s" in store.job(silent)["error"]
    assert store.job(recent)["state"] == "running"


def test_a_job_handed_to_a_queue_lives_while_someone_beats_it(backend: dict[str, Any], open_store: Factory) -> None:
    store = open_store()
    dead_job, _ = store.claim_or_defer("follow-up", "x", full_export=False)
    assert _run_processes(_queue_hand_over_and_die, [(backend, dead_job)]) == [True]
    assert store.interrupt_unfinished(stale_after=60) == 0  # its queuer is gone, the queue is not
    assert store.beat("rq:labelpilot-train") == 1
    store.update_job(dead_job, heartbeat=time.time() - 120)  # no server beat it for two minutes
    assert store.interrupt_unfinished(stale_after=60) == 1
    assert store.hand_over(dead_job, "rq:labelpilot-train") is False  # not queued any more


def _queue_hand_over_and_die(kwargs: dict[str, Any], job_id: int, start: Any, out: Any) -> None:
    """What an RQ work-horse does with a follow-up: queue it and hand it to Redis, then exit."""
    store = ProjectStore(kwargs["data_dir"], database_url=kwargs["database_url"])
    start.wait(30)
    out.put(store.hand_over(job_id, "rq:labelpilot-train"))
    out.close()
    out.join_thread()  # the answer is sent before the abrupt exit
    os._exit(0)


def test_the_sweeper_marks_jobs_that_go_stale_while_the_server_runs(open_store: Factory) -> None:
    live = open_store(heartbeat=0.1)
    mine, _ = live.claim_or_defer("mine", "x", full_export=False)
    live.claim(mine)
    theirs = _foreign(live, "theirs", 0)  # beating when we start, then its machine goes away
    sweeper = open_store(heartbeat=0.1)
    sweeper.start_sweeper(stale_after=0.6)
    wait_for(lambda: live.job(theirs)["state"] == "interrupted", timeout=10, interval=0.05,
             what="the sweeper to mark the silent job")
    assert live.job(mine)["state"] == "running"


def test_run_job_leaves_a_job_claimed_elsewhere_alone(backend: dict[str, Any], open_store: Factory) -> None:
    from labelpilot.jobs.training import run_job

    settings = Settings(data_dir=backend["data_dir"], database_url=backend["database_url"])
    runner = open_store()
    job_id, _ = runner.claim_or_defer("p", "x", full_export=False)
    assert runner.claim(job_id) is not None
    assert run_job(settings, "p", job_id, False, store=open_store()) is None
    job = runner.job(job_id)
    assert (job["state"], job["owner"], job["error"]) == ("running", runner.owner, None)


def test_sqlite_data_dir_from_before_heartbeats_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.executescript(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT NOT NULL, reason TEXT NOT NULL,"
        " state TEXT NOT NULL, queued REAL NOT NULL, started REAL, finished REAL, error TEXT, version TEXT,"
        " progress TEXT, report TEXT, full_export INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO jobs(uid, reason, state, queued) VALUES ('p', 'x', 'running', 1.0);"
    )
    db.close()
    store = ProjectStore(tmp_path)
    assert store.job(1)["heartbeat"] is None  # a job of the old server: no heartbeat, so stale
    assert ProjectStore(tmp_path).interrupt_unfinished() == 1
    assert store.claim_or_defer("p", "y", full_export=False) == (2, False)


def test_sqlite_data_dir_from_before_incremental_sync_is_migrated(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.executescript(
        "CREATE TABLE projects (uid TEXT PRIMARY KEY, label_config TEXT, hostname TEXT, access_token TEXT,"
        " extra_params TEXT, authed INTEGER NOT NULL DEFAULT 0, since_train INTEGER NOT NULL DEFAULT 0,"
        " synced INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);"
        "INSERT INTO projects(uid, synced, updated) VALUES ('p', 1, 1.0);"
    )
    db.close()
    store = ProjectStore(tmp_path)
    assert store.project("p")["synced_at"] is None  # synced before: the next Start Training exports in full
    store.mark_synced("p", 5.0)
    assert ProjectStore(tmp_path).project("p")["synced_at"] == 5.0


# -- the model registry's index ---------------------------------------------------------------------------
def _registry(backend: dict[str, Any], root: Path | None = None) -> Any:
    from labelpilot.registry import Registry

    return Registry(root or backend["data_dir"] / "registry", database_url=backend["database_url"])


def _majority(label: str) -> tuple[Any, Any]:
    from labelpilot.models import base
    from tests.test_registry import make_bundle

    base._BUILTIN["test-majority"] = "tests.test_registry:MajorityModel"  # also in spawned processes
    return make_bundle(label)


def test_registry_versions_serving_and_metadata(backend: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from labelpilot.models import base

    monkeypatch.setitem(base._BUILTIN, "test-majority", "tests.test_registry:MajorityModel")
    reg = _registry(backend)
    assert reg.backend.name == ("postgresql" if backend["database_url"] else "sqlite")
    bundle, report = _majority("pos")
    v1 = reg.register("ls-project-1", bundle, report=report)
    v2 = reg.register("ls-project-1", _majority("neg")[0], promote=False)
    assert (v1.version, v2.version, reg.serving_version("ls-project-1")) == (1, 2, 1)
    assert reg.promote("ls-project-1", 2).version == 2 and reg.rollback("ls-project-1").version == 1
    assert reg.load("ls-project-1")[1].models["label"].label_ == "pos"  # the files are on the model store
    assert reg.find_tag(v2.tag).version == 2 and reg.find_tag("nope") is None
    assert reg.list_models() == [{"name": "ls-project-1", "serving": 1, "versions": 2, "created": v1.created}]
    assert reg.update_report("ls-project-1", 1, {"audit": {"suspects": 3}}).report["audit"] == {"suspects": 3}
    reg.add_evaluation("ls-project-1", 1, "holdout.csv", {"accuracy": 0.75})
    assert [e["result"] for e in reg.evaluations("ls-project-1", 1)] == [{"accuracy": 0.75}]
    assert [h["action"] for h in reg.history("ls-project-1")] == ["register", "promote", "rollback"]
    assert _registry(backend).get("ls-project-1").tag == v1.tag  # another process's view


def _register_many(kwargs: dict[str, Any], n: int, start: Any, out: Any) -> None:
    reg = _registry(kwargs)
    start.wait(30)
    out.put([reg.register("shared", _majority("pos")[0]).version for _ in range(n)])


def test_two_processes_registering_one_model_get_distinct_complete_versions(backend: dict[str, Any]) -> None:
    results = _run_processes(_register_many, [(backend, 4), (backend, 4)])
    assert sorted(v for r in results for v in r) == list(range(1, 9))
    reg = _registry(backend)
    versions = reg.list_versions("shared")
    assert [mv.version for mv in versions] == list(range(1, 9)) and len({mv.tag for mv in versions}) == 8
    assert all((mv.path / "bundle.json").exists() for mv in versions)
    assert reg.get("shared").version == max(max(r) for r in results)


def test_cleanup_leaves_a_shared_store_s_writes_in_flight_alone(backend: dict[str, Any]) -> None:
    reg = _registry(backend)
    reg.register("demo", _majority("pos")[0])
    model_dir = next((reg.root / "models").iterdir())
    for name in (".tmp-young", ".tmp-old", "v7"):
        (model_dir / name).mkdir()
    hours_ago = time.time() - 7200
    os.utime(model_dir / ".tmp-old", (hours_ago, hours_ago))
    removed = sorted(Path(p).name for p in reg.cleanup())
    if backend["database_url"]:  # replicas share the store: a young folder may be another's register()
        assert removed == [".tmp-old"]
    else:
        assert removed == [".tmp-old", ".tmp-young", "v7"]
    assert [mv.version for mv in reg.list_versions("demo")] == [1]


# -- two real API processes on one PostgreSQL database ----------------------------------------------------
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_servers_on_one_database_share_projects_jobs_and_versions(
    backend: dict[str, Any], start_server: Any, fake_ls: Any
) -> None:
    pytest.importorskip("labelpilot.models.text_linear", reason="the text-linear family is not built yet")
    from tests.conftest import sentiment_tasks
    from tests.test_training_server import PROJECT, UID, big_tasks, setup

    fake_ls.tokens.add("Token setup-token")
    fake_ls.tasks[3] = sentiment_tasks()
    env = {"LABELPILOT_DATABASE_URL": backend["database_url"], "LABELPILOT_RETRAIN_EVERY": "0"}
    shared = backend["data_dir"] / "shared"  # the model store both mount
    a = start_server(shared, **env)
    b = start_server(shared, **env)
    assert not (shared / "state.sqlite3").exists() and not (shared / "registry" / "registry.sqlite3").exists()
    with a.client() as ca, b.client() as cb:
        setup(ca, fake_ls.url)  # only A is told about the project
        assert cb.get("/training", params={"project": UID}).status_code == 200  # B knows it from the database
        assert cb.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201

        def done_on_a() -> dict[str, Any] | None:
            jobs = ca.get("/training", params={"project": UID}).json()["jobs"]
            return jobs[0] if jobs and jobs[0]["state"] in ("done", "failed", "interrupted") else None

        job = wait_for(done_on_a, timeout=180, what="B's job, seen from A, to end")
        assert job["state"] == "done" and job["version"], job
        # A lists the version B's trainer registered (shared index and model store)
        assert ca.get("/versions", params={"project": UID}).json()["versions"] == [job["version"]]

        # a replica starting while B trains leaves B's job alone (it used to mark every unfinished job)
        fake_ls.tasks[3] = big_tasks(20000, seed=3)
        assert cb.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        wait_for(lambda: cb.get("/training", params={"project": UID}).json()["jobs"][0]["state"] == "running",
                 what="B's second job to run")
        start_server(shared, **env)  # healthy: its start-up interrupt_unfinished has run
        state = cb.get("/training", params={"project": UID}).json()["jobs"][0]["state"]
        assert state == "running", f"B's job ended ({state}) before the replica started: the check proves nothing"
        second = wait_for(done_on_a, timeout=300, what="B's second job to end")
        assert second["id"] != job["id"] and second["state"] == "done", second
