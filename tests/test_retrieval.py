"""Similarity search and FAQ matching (issue 15): the faiss index, /v1/indexes and /v1/faq over real HTTP,
persistence across a restart, the CLI (build, dups, faq train).

The text parts need the text encoder and the image parts the vision backbone; they skip, saying why, when
those are not installed. Plain-vector indexes need neither.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("faiss", reason="the 'retrieval' extra (faiss-cpu) is not installed")

from labelpilot.encoders import encoder_problem
from labelpilot.models.vision.backbone import onnx_available, torch_available
from labelpilot.retrieval.index import VectorIndex, normalise
from tests.conftest import launch_server, stop_server

PROBLEM = encoder_problem()
needs_encoder = pytest.mark.skipif(PROBLEM is not None, reason=f"text encoder not available: {PROBLEM}")
needs_vision = pytest.mark.skipif(not (torch_available() and onnx_available()),
                                  reason="the 'vision' extra (torch, efficientnet weights, onnx) is not installed")
TOKEN = "retrieval-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FAQ_ROWS = [  # a small car-presales FAQ written for this test: (question id, standard question, phrasings)
    ("price", "这款车多少钱？", ["这车卖多少钱", "价格是多少", "落地价多少", "how much does this car cost",
                           "what is the price", "报价多少"]),
    ("fuel", "油耗是多少？", ["百公里油耗多少", "费油吗", "油耗高不高", "what is the fuel consumption",
                         "how many litres per 100 km", "省油吗"]),
    ("warranty", "保修多久？", ["质保几年", "保修期多长", "整车质保政策", "how long is the warranty",
                           "what does the warranty cover", "三包期限是多久"]),
    ("test_drive", "可以试驾吗？", ["能不能试驾", "怎么预约试驾", "试驾要带什么", "can I book a test drive",
                              "is a test drive possible", "周末可以试驾吗"]),
    ("loan", "可以贷款买车吗？", ["能分期吗", "首付多少", "贷款利率多少", "can I buy it on credit",
                            "is there a car loan", "零首付可以吗"]),
    ("colour", "有哪些颜色？", ["有几种颜色", "有白色的吗", "车身颜色可选哪些", "which colours are available",
                          "is there a red one", "有黑色吗"]),
]


def _png(colour: tuple[int, int, int], size: int = 64, stripes: bool = False) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), colour)
    if stripes:
        draw = ImageDraw.Draw(img)
        for x in range(0, size, 8):
            draw.rectangle([x, 0, x + 3, size], fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ------------------------------------------------------------------------------------------ the index


@pytest.mark.parametrize("hnsw_min", [10**9, 64])
def test_index_add_remove_search_save(tmp_path: Path, hnsw_min: int) -> None:
    rng = np.random.default_rng(1)
    X = normalise(rng.normal(size=(200, 24)), 24)
    ids = [f"item-{i}" for i in range(200)]
    index = VectorIndex("vector", 24, hnsw_min=hnsw_min)
    index.add(ids, X, [{"n": i} for i in range(200)])
    assert index.type == ("hnsw" if hnsw_min == 64 else "flat")
    exact = X @ X[:5].T
    for q in range(5):
        hits = index.search(X[q : q + 1], 5)[0]
        assert hits[0].id == ids[q] and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.id for h in hits] == [ids[i] for i in np.argsort(-exact[:, q])[:5]]
    assert "item-0" not in [h.id for h in index.search(X[:1], 3, exclude=["item-0"])[0]]
    assert index.remove(["item-0", "nope"]) == ["nope"]
    assert "item-0" not in {h.id for h in index.search(X[:1], 10)[0]}
    index.add(["item-1"], X[2:3])  # replacing an id moves it
    assert {h.id for h in index.search(X[2:3], 2)[0]} == {"item-1", "item-2"}
    assert index.search(X[1:2], 1)[0][0].id != "item-1"  # its old vector is gone
    index.save(tmp_path / "v")
    again = VectorIndex.load(tmp_path / "v")
    assert len(again) == len(index) == 199 and again.type == index.type
    assert [h.id for h in again.search(X[7:8], 4)[0]] == [h.id for h in index.search(X[7:8], 4)[0]]
    assert again.search(X[9:10], 1)[0][0].payload == {"n": 9}
    again.remove(ids[1:120])  # past a quarter: an HNSW graph is rebuilt without the tombstones
    assert len(again) == 80 and again.search(X[150:151], 1)[0][0].id == "item-150"


def test_index_rejects_bad_vectors() -> None:
    from labelpilot.errors import InputError

    with pytest.raises(InputError) as err:
        normalise([[1.0, 2.0]], 3, "items.4.vector")
    assert err.value.field == "items.4.vector"
    for bad in ([[0.0, 0.0, 0.0]], [[1.0, float("nan"), 0.0]], "abc"):
        with pytest.raises(InputError):
            normalise(bad, 3)


def test_a_kind_without_its_encoder_is_a_422_naming_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelpilot.errors import InputError
    from labelpilot.retrieval.service import kind_dim

    monkeypatch.setenv("LABELPILOT_ENCODER", "none")
    with pytest.raises(InputError) as err:
        kind_dim("text", None)
    assert err.value.field == "kind" and "LABELPILOT_ENCODER=none" in err.value.message
    for kind, dim in (("vector", 0), ("vector", True), ("sound", 3)):
        with pytest.raises(InputError):
            kind_dim(kind, dim)
    assert kind_dim("vector", 7) == (7, None)


@needs_encoder
def test_texts_are_refused_by_an_index_of_another_encoder() -> None:
    from labelpilot.errors import InputError
    from labelpilot.retrieval.service import parse_item

    index = VectorIndex("text", 512, encoder="some-other-encoder")
    with pytest.raises(InputError) as err:
        parse_item({"id": "a", "text": "hello"}, "items.0", index, need_id=True)
    assert err.value.field == "items.0.text" and "rebuild" in err.value.message


# -------------------------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("retrieval")
    images = root / "allowed"
    images.mkdir()
    (images / "blue.png").write_bytes(_png((10, 20, 200)))
    srv = launch_server(root / "data", root / "server.log", LABELPILOT_API_TOKENS=TOKEN,
                        LABELPILOT_LOCAL_FILES_ROOT=str(images))
    yield srv
    stop_server(srv.proc)


def test_vector_index_over_http(server) -> None:
    rng = np.random.default_rng(2)
    X = normalise(rng.normal(size=(30, 8)), 8)
    with server.client(headers=AUTH) as c:
        assert server.client().get("/v1/indexes").status_code == 401  # same bearer tokens as /v1/models
        r = c.post("/v1/indexes/nope/search", json={"vector": X[0].tolist()})
        assert r.status_code == 404 and r.json()["field"] == "index"
        r = c.post("/v1/indexes/vec/items", json={"items": [{"id": "a", "vector": X[0].tolist()}]})
        assert r.status_code == 404 and "kind" in r.json()["detail"]  # no kind: not created
        items = [{"id": f"v{i}", "vector": X[i].tolist(), "meta": {"i": i}} for i in range(30)]
        r = c.post("/v1/indexes/vec/items", json={"kind": "vector", "dim": 8, "items": items})
        assert r.status_code == 200, r.text
        assert r.json()["added"] == 30 and r.json()["count"] == 30 and r.json()["version"] == 1
        # a vector of the wrong size, a text for a vector index: 422 naming the item, nothing changes
        bad = [{"id": "ok", "vector": X[1].tolist()}, {"id": "short", "vector": [1.0, 2.0]}]
        r = c.post("/v1/indexes/vec/items", json={"items": bad})
        assert r.status_code == 422 and r.json()["field"] == "items.1.vector"
        r = c.post("/v1/indexes/vec/items", json={"items": [items[0], items[1], items[0]], "remove": ["v5"]})
        assert r.status_code == 422 and r.json()["field"] == "items.2.id"
        r = c.post("/v1/indexes/vec/items", json={"items": [{"id": "t", "text": "hello"}]})
        assert r.status_code == 422 and r.json()["field"] == "items.0.text"
        r = c.post("/v1/indexes/vec/search", json={"vector": [1.0] * 7})
        assert r.status_code == 422 and r.json()["field"] == "query.vector"
        r = c.post("/v1/indexes/vec/search", json={"vector": X[3].tolist(), "k": 0})
        assert r.status_code == 422 and r.json()["field"] == "k"
        r = c.post("/v1/indexes/vec/items", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "body"
        r = c.post("/v1/indexes/vec/search", json={"vector": X[3].tolist(), "k": 3})
        body = r.json()
        assert r.status_code == 200 and body["version"] == 1
        assert body["results"][0] == {"id": "v3", "score": pytest.approx(1.0, abs=1e-5), "item": {"i": 3}}
        expected = [f"v{i}" for i in np.argsort(-(X @ X[3]))[:3]]
        assert [h["id"] for h in body["results"]] == expected
        r = c.post("/v1/indexes/vec/search", json={"id": "v3", "k": 2})
        assert [h["id"] for h in r.json()["results"]] == expected[1:3]
        r = c.post("/v1/indexes/vec/search", json={"id": "missing"})
        assert r.status_code == 404 and r.json()["field"] == "id"
        r = c.post("/v1/indexes/vec/items", json={"remove": ["v3", "zz"]})
        assert r.json()["removed"] == 1 and r.json()["not_found"] == ["zz"] and r.json()["version"] == 2
        r = c.post("/v1/indexes/vec/search", json={"vector": X[3].tolist(), "k": 3})
        assert "v3" not in [h["id"] for h in r.json()["results"]]
        assert c.post("/v1/indexes/vec/search", json={"id": "v5", "k": 1}).status_code == 200  # not removed
        listed = {i["name"]: i for i in c.get("/v1/indexes").json()["indexes"]}
        assert listed["vec"]["count"] == 29 and listed["vec"]["kind"] == "vector" and listed["vec"]["dim"] == 8
        assert "vec" not in {m["name"] for m in c.get("/v1/models").json()["models"]}



@needs_vision
def test_image_index_serves_the_good_images_of_a_batch(server) -> None:
    red, red2, green = _png((220, 20, 20)), _png((200, 30, 25), size=80), _png((20, 200, 40), stripes=True)
    broken = _png((1, 2, 3))[:40]  # a PNG cut short
    items = [{"id": "red", "image": _b64(red)}, {"id": "green", "image": _b64(green)},
             {"id": "broken", "image": _b64(broken)},
             {"id": "local", "image_url": "blue.png"},  # under LABELPILOT_LOCAL_FILES_ROOT
             {"id": "far", "image_url": "http://169.254.169.254/latest/meta-data/x.png"}]
    with server.client(headers=AUTH, timeout=120) as c:
        r = c.post("/v1/indexes/pics/items", json={"kind": "image", "items": items})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["added"] == 3 and body["count"] == 3
        errors = {e["id"]: e for e in body["errors"]}
        assert set(errors) == {"broken", "far"}
        assert errors["broken"]["status"] == 422 and errors["broken"]["field"] == "items.2.image"
        assert errors["far"]["status"] == 403 and "LABELPILOT_MEDIA_ALLOWLIST" in errors["far"]["detail"]
        r = c.post("/v1/indexes/pics/search", json={"image": _b64(red2), "k": 3})
        assert r.status_code == 200 and r.json()["results"][0]["id"] == "red"
        r = c.post("/v1/indexes/pics/search", json={"image": _b64(broken)})
        assert r.status_code == 422 and r.json()["field"] == "image"
        r = c.post("/v1/indexes/pics/items", json={"items": [{"id": "b", "image": _b64(broken)}]})
        assert r.status_code == 422 and r.json()["errors"][0]["id"] == "b"  # every item failed
        r = c.post("/v1/indexes/pics/items", json={"items": [{"id": "x", "image": "%%%"}]})
        assert r.status_code == 422 and r.json()["field"] == "items.0.image"
        r = c.post("/v1/indexes/pics/items", json={"items": [{"id": "x", "vector": [0.1] * 10}]})
        assert r.status_code == 422 and r.json()["field"] == "items.0.vector"  # 1280 numbers expected
        assert c.get("/v1/indexes/pics").json()["count"] == 3  # the refused requests changed nothing


@needs_encoder
def test_text_index_and_faq_over_http(server, tmp_path: Path) -> None:
    texts = {"t1": "北京今天下大雨，出门记得带伞", "t2": "国足在世界杯预选赛中获胜", "t3": "央行宣布降低存款准备金率",
             "t4": "The football team won the championship final"}
    with server.client(headers=AUTH, timeout=60) as c:
        items = [{"id": k, "text": v} for k, v in texts.items()]
        r = c.post("/v1/indexes/news/items", json={"kind": "text", "items": items})
        assert r.status_code == 200 and r.json()["added"] == 4, r.text
        r = c.post("/v1/indexes/news/search", json={"text": "暴雨天气预报", "k": 2})
        assert r.status_code == 200 and r.json()["results"][0]["id"] == "t1"
        assert r.json()["results"][0]["item"]["text"] == texts["t1"]
        r = c.post("/v1/indexes/news/search", json={"id": "t2", "k": 1})
        assert r.json()["results"][0]["id"] == "t4"  # the other football item, across languages
        r = c.post("/v1/indexes/news/items", json={"items": [{"id": "i", "image": _b64(b"x")}]})
        assert r.status_code == 422 and r.json()["field"] == "items.0.image"  # wrong kind

    # FAQ: trained by the CLI into the server's data dir, answered over HTTP
    rows = [{"query": p, "question_id": q, "answer": f"answer of {q}", "question": std}
            for q, std, phr in FAQ_ROWS for p in phr]
    path = tmp_path / "faq.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["query", "question_id", "answer", "question"])
        w.writeheader()
        w.writerows(rows)
    from labelpilot.cli import app

    out = CliRunner().invoke(app, ["faq", "train", str(path), "--name", "cars", "--data-dir", str(server.data_dir)])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output)
    assert metrics["questions"] == 6 and 0.0 <= metrics["threshold"] <= 1.0
    assert metrics["heldout_unanswerable"] == 6  # one of the 6 questions was left out to tune the threshold
    from labelpilot.retrieval.faq import FaqStore

    _, model = FaqStore(server.data_dir / "faq").get("cars")
    model.threshold = 1.01  # nothing is that sure: "no answer", with the candidates
    refused = model.answer(["价格是多少"])[0]
    assert not refused["answered"] and refused["answer"] is None and refused["candidates"][0]["question_id"] == "price"
    with server.client(headers=AUTH, timeout=60) as c:
        r = c.post("/v1/faq/cars/answer", json={"query": "这辆车的价格是多少钱"})
        body = r.json()
        assert r.status_code == 200, r.text
        assert body["question_id"] == "price" and body["answer"] == "answer of price" and body["answered"]
        assert body["question"] == "这款车多少钱？" and body["confidence"] >= body["threshold"]
        r = c.post("/v1/faq/cars/answer", json={"queries": ["保修期是几年", "what colours can I choose"]})
        assert [a["question_id"] for a in r.json()["answers"]] == ["warranty", "colour"]
        far = c.post("/v1/faq/cars/answer", json={"query": "明天北京会下雪吗"}).json()
        assert far["confidence"] < body["confidence"]
        assert c.post("/v1/faq/nope/answer", json={"query": "x"}).status_code == 404
        r = c.post("/v1/faq/cars/answer", json={"query": 3})
        assert r.status_code == 422 and r.json()["field"] == "query"


@needs_encoder
def test_cli_build_search_and_dups(tmp_path: Path) -> None:
    from labelpilot.cli import app

    rows = [("a", "今天股市大涨，沪指收涨2%", "finance"), ("b", "今天股市大涨，沪指收涨2%！", "finance"),
            ("c", "今天股市大涨 沪指收涨2%", "stock"), ("d", "湖人队加时赛击败勇士", "sports"),
            ("e", "新款电动车续航突破一千公里", "car")]
    src = tmp_path / "items.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label"])
        w.writerows(rows)
    runner = CliRunner()
    data = str(tmp_path / "data")
    out = runner.invoke(app, ["index", "build", "proj", str(src), "--label-col", "label", "--data-dir", data])
    assert out.exit_code == 0, out.output
    assert '"count": 5' in out.output and '"kind": "text"' in out.output
    out = runner.invoke(app, ["index", "search", "proj", "--id", "d", "--k", "2", "--data-dir", data])
    assert out.exit_code == 0 and '"id": "a"' not in out.output.split("}")[0]
    report = tmp_path / "dups.csv"
    out = runner.invoke(app, ["index", "dups", "proj", "--threshold", "0.85", "-o", str(report), "--data-dir", data])
    assert out.exit_code == 0, out.output
    counts = json.loads(out.output)
    assert counts["clusters"] == 1 and counts["items_in_clusters"] == 3 and counts["pairs"] == 3
    with report.open(encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert {(r["id_a"], r["id_b"]) for r in got} == {("a", "b"), ("a", "c"), ("b", "c")}
    assert all(float(r["score"]) >= 0.85 and r["cluster"] == "1" for r in got)
    assert {(r["label_a"], r["label_b"]) for r in got} == {("finance", "finance"), ("finance", "stock")}
    out = runner.invoke(app, ["index", "dups", "proj", "--threshold", "2", "--data-dir", data])
    assert out.exit_code != 0
    # a Label Studio export: columns are looked up in each task's data, ids are the task ids
    export = tmp_path / "export.json"
    export.write_text(json.dumps([{"id": 41, "data": {"text": rows[3][1]}, "annotations": []},
                                  {"id": 42, "data": {"text": rows[4][1]}, "annotations": []}], ensure_ascii=False))
    out = runner.invoke(app, ["index", "build", "ls", str(export), "--data-dir", data])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["index", "search", "ls", "--text", "湖人 勇士 篮球", "--k", "1", "--data-dir", data])
    assert json.loads(out.output)[0]["id"] == "41"


def test_index_survives_a_restart(server) -> None:
    """Last in the file: restarts the module's server on the same data dir."""
    X = normalise(np.eye(6, dtype=np.float32) + 0.01, 6)
    with server.client(headers=AUTH) as c:
        items = [{"id": f"r{i}", "vector": X[i].tolist()} for i in range(6)]
        assert c.post("/v1/indexes/keep/items", json={"kind": "vector", "dim": 6, "items": items}).status_code == 200
        assert c.post("/v1/indexes/keep/items", json={"remove": ["r5"]}).json()["version"] == 2
    stop_server(server.proc)
    again = launch_server(server.data_dir, server.log.with_name("server-restarted.log"), LABELPILOT_API_TOKENS=TOKEN)
    server.proc, server.url = again.proc, again.url  # the fixture stops this one
    with server.client(headers=AUTH) as c:
        r = c.post("/v1/indexes/keep/search", json={"vector": X[4].tolist(), "k": 10})
        assert r.status_code == 200 and r.json()["version"] == 2
        assert r.json()["results"][0]["id"] == "r4" and len(r.json()["results"]) == 5
        assert c.get("/v1/indexes/keep").json()["count"] == 5
