"""benchmarks/tune_report.py: which tasks a losing predicted allocation misjudged."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "tune_report.py"
spec = importlib.util.spec_from_file_location("tune_report", SCRIPT)
tune_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tune_report)


def _unit():
    predicted = [{"task": "conv", "trials": 40, "predicted_ms": 80.0}, {"task": "dense", "trials": 0, "predicted_ms": 1.0},
                 {"task": "pool", "trials": 8, "predicted_ms": 19.0}]
    ms = [{"task": "conv", "trials": 16}, {"task": "dense", "trials": 16}, {"task": "pool", "trials": 16}]
    row = {"model": "zoo:m:1", "runs": {"predicted": {"tasks": predicted, "tuned_ms": 6.0},
                                         "metaschedule": {"tasks": ms, "tuned_ms": 4.0}}}
    kernels = {"untuned": {"conv": 70.0, "dense": 10.0, "pool": 20.0},
               "predicted": {"conv": 3.0, "dense": 2.0, "pool": 0.5},
               "metaschedule": {"conv": 2.5, "dense": 0.2, "pool": 0.9}}
    return row, kernels


def test_misjudged_ranks_tasks_by_time_lost_and_says_why():
    row, kernels = _unit()
    lines = tune_report.misjudged(row, kernels)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    # dense lost 1.8 ms (cut), conv 0.5 ms (more trials, slower); pool was faster: not listed.
    assert [c[1] for c in cells] == ["dense", "conv"]
    assert cells[0][2] == "0 / 16" and cells[0][6] == "left untuned by the cut"
    assert cells[0][3] == "1.0% / 10.0%" and cells[0][5] == "+1.800"
    assert cells[1][6] == "more trials, slower schedule (search variance)"
    # Without the unit's per-kernel times there is nothing to attribute.
    assert tune_report.misjudged(row, {"untuned": {}}) == []
