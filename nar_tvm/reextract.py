"""Re-extract a dataset store's graphs from its records' zoo parameters, without measuring.

A record keeps the generator parameters of its model (`model.family/seed/params`) and the
platform it was measured on (target, pipeline), which is all the extraction needs: the model
is rebuilt from the zoo and its op and fused graphs extracted again as the profiler would,
with the graph-level passes of the measured pipeline and shape-only constant folding. Use it
when the extraction learns something new (OpGraph /2's operator attributes on fused nodes).

Measurements, kernel times and everything else in a record stay as they are. A record is
rewritten only if the new graphs describe the network that was measured: the op graph must
hash as before, and the fused graph must have the same kernels in the same order, with the
same ops, shapes and FLOPs, so that `kernels_ms` joins its nodes exactly as before.

    python -m nar_tvm.reextract benchmarks/data/cpu-znver4-1t --out /tmp/reextracted
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from nar_tvm.dataset import DatasetStore
from nar_tvm.passes.opgraph import FORMAT as GRAPH_FORMAT

# What re-extraction may add to a fused node; everything else must come out as it was stored.
_ADDED_FIELDS = ("attrs", "fused")


class ReextractError(ValueError):
    """The rebuilt model's graphs are not those of the measured network."""


def _comparable(graph: dict) -> dict:
    nodes = [{k: v for k, v in nd.items() if k not in _ADDED_FIELDS} for nd in graph["nodes"]]
    return {"level": graph["level"], "inputs": graph["inputs"], "nodes": nodes,
            "edges": [list(e) for e in graph["edges"]]}


def _first_difference(old: dict, new: dict) -> str:
    a, b = _comparable(old), _comparable(new)
    if len(a["nodes"]) != len(b["nodes"]):
        return f"{len(b['nodes'])} nodes instead of {len(a['nodes'])}"
    for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"])):
        if x != y:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            return f"node {i} ({x.get('kernel') or x.get('op')}) differs in {', '.join(keys)}"
    return "inputs or edges differ"


class Reextractor:
    """Rebuilds zoo models and extracts their graphs for the platform a record names."""

    def __init__(self):
        self._last = None  # (family, seed) -> loaded module: a store lists a model once per platform

    def _loaded(self, family: str, seed: int, params: dict):
        from . import zoo
        from .loaders import load_onnx
        from .profiler import onnx_bytes_of

        variant = zoo.generate(family, seed)
        # JSON round trip: stored params are JSON, the generator's may hold tuples.
        if json.loads(json.dumps(variant.params)) != params:
            raise ReextractError(f"zoo:{family}:{seed} now generates other parameters than the record's: "
                                 "the zoo changed since it was measured")
        if self._last is not None and self._last[0] == (family, seed):
            return self._last[1]
        loaded = load_onnx(onnx_bytes_of(variant.build(), variant.example_input()), None, variant.name)
        self._last = ((family, seed), loaded)
        return loaded

    def graphs(self, record: dict) -> dict[str, dict]:
        """New {"op", "fused"} graph dicts for `record`, checked against the stored ones."""
        from .integration import module_graph
        from .passes.extract import extract_opgraph
        from .platform import PlatformSpec

        model, platform = record["model"], record["platform"]
        loaded = self._loaded(model["family"], int(model["seed"]), model["params"])
        spec = PlatformSpec(target=json.loads(platform["target"]), pipeline=platform["pipeline"],
                            threads=int(platform["threads"]))
        target = spec.tvm_target()
        op = extract_opgraph(loaded.mod, "op", target, loaded.name)
        if op.content_hash() != record["graph_hash"]:
            raise ReextractError(f"{record['job']}: the op graph now hashes to {op.content_hash()}, "
                                 f"not the measured {record['graph_hash']}")
        # DecomposeOpsForInference, then the pipeline's graph-level passes: what measure.build runs.
        fused = module_graph(loaded.mod, spec.pipeline, "fused", target)
        fused.name = loaded.name
        new = {"op": op.to_dict(), "fused": fused.to_dict()}
        old_fused = record["graphs"]["fused"]
        if _comparable(old_fused) != _comparable(new["fused"]):
            raise ReextractError(f"{record['job']}: the fused graph no longer matches the measured one: "
                                 f"{_first_difference(old_fused, new['fused'])}")
        return new


def reextract_records(records, reextractor: Reextractor | None = None, log=None):
    """Yield (record, outcome) with outcome "rewritten", "kept" (no graphs to redo: failed,
    duplicate, remeasure or non-zoo records) or "mismatch: <why>" (record left as it was)."""
    reextractor = reextractor or Reextractor()
    for record in records:
        model = record.get("model", {})
        if record.get("status") != "ok" or not record["job"].startswith("zoo:") or model.get("seed") is None:
            yield record, "kept"
            continue
        try:
            graphs = reextractor.graphs(record)
        except ReextractError as exc:
            if log:
                log(f"left as it was: {exc}")
            yield record, f"mismatch: {exc}"
            continue
        yield {**record, "graphs": graphs}, "rewritten"


def _write_shard(path: Path, records: list[dict]) -> None:
    opener = gzip.open if path.name.endswith(".gz") else open
    tmp = path.with_name(path.name + ".tmp")
    kwargs = {"compresslevel": 9} if path.name.endswith(".gz") else {}
    with opener(tmp, "wt", encoding="utf-8", **kwargs) as fh:
        for r in records:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


# Finished shards, in the output store: a rerun after an interruption skips a shard whose file
# still has the hash it was written with under the current graph format (a store is hours of
# extraction; a new format is a reason to extract again).
MANIFEST = "reextracted.json"


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def reextract_store(src, dst=None, progress: bool = False) -> Counter:
    """Rewrite the graphs of store `src` into `dst` (same shard files, same record order;
    other files copied), or in place when `dst` is None. Returns the outcome counts of the
    shards done in this call; shards finished by an earlier, interrupted call are skipped."""
    src = Path(src)
    store = DatasetStore(src)
    shards = store.shards()
    if not shards:
        raise FileNotFoundError(f"{src}: no dataset shards to re-extract")
    out = src if dst is None else Path(dst)
    if dst is not None:
        if out.resolve() == src.resolve():
            raise ValueError(f"--out {out} is the store itself; leave it out to rewrite in place")
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f not in shards and f.name != MANIFEST:
                shutil.copy2(f, out / f.name)
    manifest_path = out / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    counts: Counter = Counter()
    reextractor = Reextractor()

    def log(msg):
        print(msg, file=sys.stderr)

    for i, shard in enumerate(shards):
        done = manifest.get(shard.name)
        if (done and done.get("format") == GRAPH_FORMAT and (out / shard.name).is_file()
                and _file_hash(out / shard.name) == done["sha256"]):
            print(f"{shard.name}: re-extracted by an earlier run, skipped", file=sys.stderr)
            continue
        print(f"[{i + 1}/{len(shards)}] {shard.name}", file=sys.stderr, flush=True)
        records = []
        for record, outcome in reextract_records(store._read_shard(shard), reextractor, log):
            records.append(record)
            counts[outcome.split(":", 1)[0]] += 1
            if progress:
                print(f"{record['job']}: {outcome}", file=sys.stderr)
        # Each shard is replaced whole, once done: an interrupted run leaves every shard valid.
        _write_shard(out / shard.name, records)
        manifest[shard.name] = {"sha256": _file_hash(out / shard.name), "records": len(records),
                                "format": GRAPH_FORMAT}
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nar_tvm.reextract", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="dataset store (folder of shards)")
    parser.add_argument("--out", help="write the re-extracted store here (default: rewrite in place)")
    parser.add_argument("--quiet", action="store_true", help="no line per record")
    args = parser.parse_args(argv)
    counts = reextract_store(args.store, args.out, progress=not args.quiet)
    print(json.dumps(dict(counts)))
    return 1 if counts["mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
