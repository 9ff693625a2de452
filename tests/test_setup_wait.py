"""/setup answers within Label Studio's 3 s even while the text encoder is still loading.

Label Studio validates an ML backend with one /setup and gives it 3 s. Before the first training the version
string depends on the zero-shot models, which need the text encoder; on a busy machine its load takes several
seconds (seen in CI: 5.2 s at load 9, and LS refused the backend). The encoder's lock is held here, as the
start-up warm-up holds it while it loads, and the real app is served by uvicorn on loopback.
"""

from __future__ import annotations

import threading
import time

import httpx

from labelpilot import encoders
from labelpilot.config import Settings
from labelpilot.server.app import create_app
from tests.conftest import free_port, wait_for

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices></View>"""


def test_setup_does_not_wait_for_a_slow_encoder_and_the_server_stays_responsive(tmp_path) -> None:
    import uvicorn

    encoders.reset()
    app = create_app(Settings(data_dir=tmp_path / "data", setup_wait=1.0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    encoders._lock.acquire()  # the encoder is "loading" until released
    released = False
    try:
        thread.start()
        wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as client:
            t0 = time.monotonic()
            resp = client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG})
            took = time.monotonic() - t0
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert took < 2.5, f"/setup took {took:.1f} s"
            assert body["model_version"] == "untrained"
            assert any("still loading" in w for w in body["warnings"]), body
            t0 = time.monotonic()
            assert client.get("/health").status_code == 200
            assert time.monotonic() - t0 < 1.0  # the event loop is free while the load goes on
            encoders._lock.release()
            released = True
            # once loaded (or known to be missing), /setup gives the real answer at once
            again = wait_for(lambda: (r := client.post("/setup", json={"project": "7.1700000000", "schema": CONFIG}))
                             and not any("still loading" in w for w in r.json().get("warnings", [])) and r,
                             timeout=60, what="the encoder load to finish")
            assert again.json()["model_version"] in {"untrained", "zero-shot-text-linear"}
    finally:
        if not released:
            encoders._lock.release()
        server.should_exit = True
        thread.join(10)
        encoders.reset()
