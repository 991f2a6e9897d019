"""benchmarks/recipe_sweep.py: the grid, resumption keys and validation-only ranking."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "recipe_sweep.py"
spec = importlib.util.spec_from_file_location("recipe_sweep", SCRIPT)
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)


def run(method, width, seed, val, test, layers=2):
    job = {"method": method, "width": width, "layers": layers, "lr": 3e-3, "node_weight": 0.0,
           "epochs": 120, "seed": seed}
    return {**job, "key": sweep.run_key(job), "device": "cpu", "train_s": 1.0, "params": 10, "best_epoch": 1,
            "val": {"mape": val, "acc@10%": 0.9}, "test": {"mape": test, "acc@10%": 0.9}}


def test_grid_is_seed_major_and_keys_ignore_order():
    args = SimpleNamespace(methods=["a", "b"], widths=[64], layers=[2, 4], lrs=[1e-3], node_weights=[0.0],
                           epochs=5, seeds=[0, 1])
    jobs = sweep.grid(args)
    assert len(jobs) == 2 * 2 * 2
    assert [j["seed"] for j in jobs] == [0] * 4 + [1] * 4
    assert sweep.run_key(dict(reversed(list(jobs[0].items())))) == sweep.run_key(jobs[0])
    assert len({sweep.run_key(j) for j in jobs}) == len(jobs)


def test_summary_ranks_on_validation_and_skips_incomplete_configs(tmp_path):
    runs = [
        # best on test, worse on validation: must not be chosen
        run("nnlp", 64, 0, val=0.05, test=0.01), run("nnlp", 64, 1, val=0.05, test=0.01),
        run("nnlp", 128, 0, val=0.02, test=0.04), run("nnlp", 128, 1, val=0.04, test=0.04),
        # best validation of all, but only one seed finished: not ranked
        run("nar-former-v2", 64, 0, val=0.001, test=0.1),
        run("nar-former-v2", 128, 0, val=0.03, test=0.03), run("nar-former-v2", 128, 1, val=0.03, test=0.03),
    ]
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    text = sweep.summarize(path)
    best = text.split("Best configuration of each method")[1]
    assert "- nnlp: width 128, 2 layers" in best and "val MAPE 0.0300" in best
    assert "- nar-former-v2: width 128, 4 layers" not in best and "- nar-former-v2: width 128, 2 layers" in best
    table_rows = [line for line in text.splitlines() if line.startswith("| nar-former-v2 | 64")]
    assert table_rows == []
