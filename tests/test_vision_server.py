"""Image pre-labelling through the server: media fetched from Label Studio with the /setup token, a bad
image in a batch gets an empty prediction, the rest are served."""

from __future__ import annotations

import io

import pytest

from tests.conftest import wait_for

pytest.importorskip("torch", reason="the vision extra is not installed")
pytest.importorskip("efficientnet_lite_pytorch", reason="the vision extra is not installed")
Image = pytest.importorskip("PIL.Image")

CONFIG = ('<View><Image name="image" value="$image"/><Choices name="colour" toName="image">'
          '<Choice value="red"/><Choice value="blue"/></Choices></View>')
UID = "21.1700000000"
PROJECT = {"id": 21, "created_at": "2023-11-14T22:13:20Z", "label_config": CONFIG}


def png(rgb: tuple[int, int, int], seed: int) -> bytes:
    img = Image.new("RGB", (96, 72), rgb)
    for k in range(6):  # some texture so images differ
        x = (seed * 13 + k * 17) % 80
        img.paste((rgb[0] // 2, rgb[1] // 2, rgb[2] // 2), (x, k * 10, x + 10, k * 10 + 6))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_image_classification_project(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token t")
    tasks = []
    for i in range(16):
        colour = "red" if i % 2 else "blue"
        path = f"/data/upload/21/img{i}.png"
        fake_ls.files[path] = png((220, 30, 30) if colour == "red" else (30, 40, 220), i)
        tasks.append({"id": i + 1, "data": {"image": path}, "annotations": [{"id": 900 + i, "result": [
            {"from_name": "colour", "to_name": "image", "type": "choices", "value": {"choices": [colour]}}]}]})
    fake_ls.tasks[21] = tasks
    fake_ls.files["/data/upload/21/new-red.png"] = png((200, 20, 40), 99)
    fake_ls.files["/data/upload/21/truncated.jpg"] = b"\xff\xd8\xff\xe0" + b"\x00" * 40
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    setup = {"project": UID, "schema": CONFIG, "hostname": fake_ls.url, "access_token": "t"}
    with server.client(timeout=60) as client:
        v0 = client.post("/setup", json=setup).json()["model_version"]
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": PROJECT}).status_code == 201
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      timeout=180, what="the image model")
        assert v1.startswith("image-classifier-v1-")
        batch = [
            {"id": 50, "data": {"image": "/data/upload/21/new-red.png"}},
            {"id": 51, "data": {"image": "/data/upload/21/truncated.jpg"}},
            {"id": 52, "data": {"image": "http://example.invalid/not-allowed.png"}},
            {"id": 53, "data": {"image": "/data/upload/21/missing.png"}},
        ]
        out = client.post("/predict", json={"tasks": batch, "label_config": CONFIG, "project": UID}).json()
    results = out["results"]
    assert len(results) == 4 and all(r["model_version"] == v1 for r in results)
    (region,) = results[0]["result"]
    assert region["value"] == {"choices": ["red"]} and region["type"] == "choices"
    assert [r["result"] for r in results[1:]] == [[], [], []]
    assert ("GET", "/data/upload/21/new-red.png", "Token t") in fake_ls.requests
    assert not any("example.invalid" in r[1] for r in fake_ls.requests)


BOX_CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image" '
              'model_score_threshold="0.3"><Label value="square"/></RectangleLabels></View>')


def square_png(seed: int) -> tuple[bytes, dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    w, h = 160, 120
    pixels = (rng.random((h, w, 3)) * 90).astype("uint8")
    s = int(rng.integers(24, 44))
    x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    pixels[y : y + s, x : x + s] = (250, 250, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    value = {"x": 100 * x / w, "y": 100 * y / h, "width": 100 * s / w, "height": 100 * s / h, "rotation": 0,
             "rectanglelabels": ["square"]}
    return buf.getvalue(), value


def test_detection_project_gets_rectangles_with_original_size(start_server, fake_ls) -> None:
    fake_ls.tokens.add("Token t")
    tasks = []
    for i in range(16):
        data, value = square_png(i)
        fake_ls.files[f"/data/upload/22/sq{i}.png"] = data
        tasks.append({"id": i + 1, "data": {"image": f"/data/upload/22/sq{i}.png"}, "annotations": [
            {"id": 700 + i, "result": [{"from_name": "box", "to_name": "image", "type": "rectanglelabels",
                                        "value": value, "original_width": 160, "original_height": 120}]}]})
    fake_ls.tasks[22] = tasks
    new, truth = square_png(99)
    fake_ls.files["/data/upload/22/new.png"] = new
    uid = "22.1700000000"
    server = start_server(LABELPILOT_RETRAIN_EVERY="0")
    setup = {"project": uid, "schema": BOX_CONFIG, "hostname": fake_ls.url, "access_token": "t",
             "extra_params": {"model_options": {"image-detector": {"image_size": 128, "variants": 4, "epochs": 15,
                                                                   "batch_size": 16}}}}
    project = {"id": 22, "created_at": "2023-11-14T22:13:20Z", "label_config": BOX_CONFIG}
    with server.client(timeout=60) as client:
        v0 = client.post("/setup", json=setup).json()["model_version"]
        client.post("/webhook", json={"action": "START_TRAINING", "project": project})
        v1 = wait_for(lambda: (v := client.post("/setup", json=setup).json()["model_version"]) != v0 and v,
                      timeout=300, what="the detector")
        body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/22/new.png"}}], "label_config": BOX_CONFIG,
                "project": uid}
        (pred,) = client.post("/predict", json=body).json()["results"]
        # interactive: the annotator's rough box snaps to the detected one, keeping its id and label
        rough = {"x": truth["x"] - 4, "y": truth["y"] + 3, "width": truth["width"] + 6, "height": truth["height"] - 2,
                 "rotation": 0, "rectanglelabels": ["square"]}
        drawn = {"id": "user-1", "from_name": "box", "to_name": "image", "type": "rectanglelabels",
                 "original_width": 160, "original_height": 120, "value": rough, "origin": "manual"}
        body["params"] = {"login": None, "password": None, "context": {"result": [drawn]}}
        (inter,) = client.post("/predict", json=body).json()["results"]
    (snapped,) = inter["result"]
    assert snapped["id"] == "user-1" and snapped["value"]["rectanglelabels"] == ["square"]
    err_before = abs(rough["x"] - truth["x"]) + abs(rough["width"] - truth["width"])
    err_after = abs(snapped["value"]["x"] - truth["x"]) + abs(snapped["value"]["width"] - truth["width"])
    assert err_after < err_before
    assert v1.startswith("image-detector-v1-") and pred["model_version"] == v1 and pred["result"]
    best = max(pred["result"], key=lambda r: r["score"])
    assert best["type"] == "rectanglelabels" and best["value"]["rectanglelabels"] == ["square"]
    assert (best["original_width"], best["original_height"]) == (160, 120)
    assert abs(best["value"]["x"] - truth["x"]) < 10 and abs(best["value"]["width"] - truth["width"]) < 10
    assert all(r["score"] >= 0.3 for r in pred["result"])  # model_score_threshold honoured
