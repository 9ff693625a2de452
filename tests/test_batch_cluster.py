"""``labelpilot predict --cluster``: batch prediction on a real Dask LocalCluster of two worker processes on
loopback gives the local path's output byte for byte; bad rows are handled as locally; a bad address or an
unreachable scheduler is a clear error and leaves no output behind."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is not installed")

from labelpilot.batch import Columns, predict_file, train_file
from labelpilot.errors import InputError
from labelpilot.registry import Registry

WORDS = {"sport": "match goal team coach league score striker keeper", "tech": "chip cloud software app data code"}


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.choice(sorted(WORDS))
        words = WORDS[label].split()
        out.append({"id": f"r{i}", "text": " ".join(rng.choice(words) for _ in range(6)), "label": label})
    return out


def _write(path: Path, rows: list[dict[str, str]], bad_line_at: int | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        w.writeheader()
        for i, r in enumerate(rows):
            if i == bad_line_at:
                f.write('only-one-field\n')
            w.writerow(r)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Path]:
    root = tmp_path_factory.mktemp("cluster")
    registry = Registry(root / "registry")
    train_file(registry, "topics", _write(root / "train.csv", _rows(300, 0)), options={"encoder": False})
    return registry, root


def test_cluster_output_equals_the_local_path_byte_for_byte(trained) -> None:
    registry, root = trained
    data = _write(root / "pool.csv", _rows(5000, 1), bad_line_at=1234)
    cols = Columns(id="id")
    local = predict_file(registry, "topics", data, root / "local.csv", cols=cols, workers=1, chunk=500)
    seen: list[int] = []
    remote = predict_file(registry, "topics", data, root / "remote.csv", cols=cols, chunk=500,
                          cluster="local:2", on_progress=seen.append)
    assert (root / "remote.csv").read_bytes() == (root / "local.csv").read_bytes()
    assert remote.predicted == local.predicted >= 4990 and remote.bad_rows == local.bad_rows != []
    assert seen == sorted(seen) and seen[-1] == remote.predicted and len(seen) >= 10  # progress per chunk


@pytest.mark.parametrize(("address", "says"), [
    ("local:0", "local:N needs a number of workers"),
    ("10.0.0.5:8786", "give a scheduler address like tcp://"),
    ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler"),
])
def test_bad_cluster_addresses_are_clear_errors_and_leave_no_output(trained, address, says) -> None:
    registry, root = trained
    data = _write(root / "small.csv", _rows(20, 2))
    out = root / f"never-{abs(hash(address))}.csv"
    with pytest.raises(InputError) as err:
        predict_file(registry, "topics", data, out, cluster=address, cluster_timeout=2)
    assert says in err.value.message and err.value.field == "cluster"
    assert not out.exists() and not list(root.glob(f"{out.name}*"))
