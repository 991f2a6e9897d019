import os

import pytest

# Tests share the machine with measurement runs; keep TVM and torch on one thread.
os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def labelled_store(tmp_path):
    """Writes a store of measured models without graphs, for code that reads only labels and
    generator parameters: `labelled_store(name, {job: (family, ms[, params])})` -> its path."""
    from nar_tvm.dataset import DatasetStore

    def write(name: str, models: dict, when: str = "2026-12-04T12:00"):
        store = DatasetStore(tmp_path / name)
        for job, (family, ms, *params) in models.items():
            store.append({"job": job, "status": "ok", "platform_id": "p", "platform": {}, "time": when,
                          "model": {"family": family, "name": job, **({"params": params[0]} if params else {})},
                          "measurement": {"median_ms": ms}})
        return tmp_path / name
    return write
