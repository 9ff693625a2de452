"""``labelpilot studio`` (issue 14): one command brings up Label Studio with labelpilot connected to a new project.

The real command runs as a subprocess, with the Label Studio virtualenv the live suite caches (``ls_venv``) and
a fresh root, so Label Studio starts cold and creates the admin from the credentials the command generates.
Everything is then checked through Label Studio's own API with the token the command kept in
``<root>/studio.json``: the project it printed exists with the given label config and tasks, the ML backend is
connected (state CO) at the backend the command started, Label Studio created its ``/webhook``, and retrieving
predictions gets one valid prediction per task from that backend. SIGTERM stops both servers. A second run on
the same root logs in with the kept credentials and adds a second, connected project.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .lsapi import LabelStudioAPI
from .lsenv import free_port, tail_file
from .validation import LabelConfig, assert_valid_predictions

CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="single">
    <Choice value="Sports"/><Choice value="Weather"/><Choice value="Cooking"/>
  </Choices>
</View>"""
TASKS = [{"text": "the striker scored twice in the final"}, {"text": "heavy rain and wind tomorrow"},
         {"text": "simmer the onions in butter"}]
PROJECT_LINE = re.compile(r"^project (\d+) connected to ML backend (\d+): (http://127\.0\.0\.1:(\d+)/projects/\d+/)$")


def _run_studio(root: Path, ls_venv: Path, title: str, timeout: float = 600.0) -> tuple[subprocess.Popen, dict]:
    """Start ``labelpilot studio`` and wait for its project line; returns the process and what it printed."""
    files = root.parent / f"{title}-inputs"
    files.mkdir(exist_ok=True)
    (files / "config.xml").write_text(CONFIG)
    (files / "tasks.json").write_text(json.dumps(TASKS))
    ls_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELPILOT_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
    env["PYTHONUNBUFFERED"] = "1"
    log = root.parent / f"{title}.out"
    cmd = [sys.executable, "-m", "labelpilot.cli", "studio", "--root", str(root), "--ls-venv", str(ls_venv),
           "--label-config", str(files / "config.xml"), "--tasks", str(files / "tasks.json"), "--title", title,
           "--ls-port", str(ls_port), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text(errors="replace").splitlines():
            m = PROJECT_LINE.match(line.strip())
            if m:
                return proc, {"project": int(m[1]), "ml": int(m[2]), "url": m[3], "ls_port": int(m[4]),
                              "port": port, "log": log}
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"labelpilot studio printed no project line (exit {proc.returncode}):\n{tail_file(log)}\n"
                        f"Label Studio log:\n{tail_file(root / 'label-studio.log')}")
        time.sleep(1)


def _stop(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _check_connected(ls: LabelStudioAPI, seen: dict, title: str) -> None:
    project = ls.project(seen["project"])
    assert project["title"] == title
    assert "<Choice value=\"Weather\"/>" in project["label_config"]
    backend_url = f"http://127.0.0.1:{seen['port']}"
    (ml,) = ls.ml_backends(seen["project"])
    assert (ml["id"], ml["state"], ml["url"].rstrip("/")) == (seen["ml"], "CO", backend_url), ml
    hooks = [h["url"] for h in ls.webhooks(seen["project"])]
    assert backend_url + "/webhook" in hooks, hooks
    assert httpx.get(backend_url + "/health", timeout=10).json()["status"] == "UP"
    ids = ls.task_ids(seen["project"])
    assert len(ids) == len(TASKS)
    ls.retrieve_predictions(seen["project"])
    predictions = ls.predictions(project=seen["project"])
    assert sorted(p["task"] for p in predictions) == sorted(ids), predictions
    tasks = {task["id"]: task["data"] for task in ls.tasks(seen["project"])}
    assert_valid_predictions(predictions, LabelConfig.parse(CONFIG), tasks)


def test_studio_brings_up_a_connected_project(ls_venv: Path, tmp_path: Path) -> None:
    root = tmp_path / "studio"
    proc, seen = _run_studio(root, ls_venv, "studio-first")
    try:
        creds = json.loads((root / "studio.json").read_text())
        assert (root / "studio.json").stat().st_mode & 0o077 == 0, "the kept credentials are private"
        assert seen["url"] == f"http://127.0.0.1:{seen['ls_port']}/projects/{seen['project']}/"
        assert creds["password"] in seen["log"].read_text()  # printed, so a person can log in
        ls = LabelStudioAPI(f"http://127.0.0.1:{seen['ls_port']}", creds["token"])
        try:
            assert ls.whoami()["email"] == creds["username"]
            _check_connected(ls, seen, "studio-first")
        finally:
            ls.close()
    finally:
        code = _stop(proc)
    assert code == 0, tail_file(seen["log"])
    for port in (seen["ls_port"], seen["port"]):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)

    # a second run on the same root: same admin, a new connected project
    proc, again = _run_studio(root, ls_venv, "studio-second", timeout=300)
    try:
        assert again["project"] != seen["project"]
        ls = LabelStudioAPI(f"http://127.0.0.1:{again['ls_port']}", creds["token"])
        try:
            _check_connected(ls, again, "studio-second")
        finally:
            ls.close()
    finally:
        assert _stop(proc) == 0


def _studio_error(tmp_path: Path, *args: str) -> str:
    """Run ``labelpilot studio`` expecting a refusal before anything starts; returns what it said."""
    cmd = [sys.executable, "-m", "labelpilot.cli", "studio", "--root", str(tmp_path / "root"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not (tmp_path / "root" / "label-studio.log").exists(), "nothing may start"
    return " ".join((done.stdout + done.stderr).split())


def test_studio_refuses_bad_input_before_starting_anything(tmp_path: Path) -> None:
    """No Label Studio needed: each refusal names the option at fault and leaves no process behind."""
    said = _studio_error(tmp_path, "--ls-venv", str(tmp_path / "nowhere"))
    assert "ls_venv" in said and "label-studio==1.23.2" in said
    config = tmp_path / "config.xml"
    config.write_text('<View><Text name="t" value="$t"/><Rating name="r" toName="t"/></View>')
    assert "label_config" in _studio_error(tmp_path, "--label-config", str(config))
    config.write_text("<View><Text")
    assert "label_config" in _studio_error(tmp_path, "--label-config", str(config))
    (tmp_path / "tasks.json").write_text("{not json")
    assert "tasks" in _studio_error(tmp_path, "--tasks", str(tmp_path / "tasks.json"))


def test_studio_refuses_a_busy_port(ls_venv: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        said = _studio_error(tmp_path, "--ls-venv", str(ls_venv), "--ls-port", str(port))
    assert "ls_port" in said and str(port) in said
