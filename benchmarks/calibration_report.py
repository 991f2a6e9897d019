"""Calibration and uncertainty report: how the predictor transfers to another machine or
platform with K calibration shots, and whether its 90% intervals cover 90%.

Stages (each cached, so a rerun only does what is missing):
  lofo      train the shipped configuration with each family left out (one CPU core, ~3 min
            each) and keep every held-out model's prediction and novelty flag
            -> benchmarks/calibration_lofo.jsonl
  intervals fit the shipped checkpoint's interval widths: q from its validation split,
            q_novel from the leave-one-family-out residuals (a quantile over families of each
            family's width, uncertainty.family_conformal_quantile); writes them into the checkpoint
            (weights untouched) with --write-default
  report    cross-machine (every panel store under benchmarks/data/panel-*), cross-platform
            (the other cpu-znver4 platforms) and interval coverage -> calibration_report.md/.json
  unseen    only the rows of families the predictor never saw (panels and the stores beside
            them, `other_stores`), into the existing calibration_report.json and .md
  own       each of those families calibrated on K of its own models, tested on the rest
            (what `nar-tvm calibrate --models` gives a user with a new family), into the same files

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/calibration_report.py lofo [--families a,b]
    python benchmarks/calibration_report.py intervals --write-default
    python benchmarks/calibration_report.py report
    python benchmarks/calibration_report.py unseen
    python benchmarks/calibration_report.py own
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data"
TRAINING_DATA = DATA / "cpu-znver4-1t"
PLATFORMS = ("cpu-znver4-2t", "cpu-znver4-1t-nhwc", "cpu-znver4-1t-nofuse")
LOFO_RUNS = REPO / "benchmarks" / "calibration_lofo.jsonl"
SHOTS = (0, 5, 10, 20)
PLATFORM_SHOTS = (0, 10)
OWN_SHOTS = (0, 3, 5, 10)
# The largest K and a test set as large, so that a draw's MAPE is not one model's error.
OWN_MIN_MODELS = 2 * max(OWN_SHOTS)
REPORT_JSON = REPO / "benchmarks" / "calibration_report.json"
# Random shot draws per K: the spread of a user's luck with their K models. One draw's coverage
# of a 10-shot interval varies by about 0.1 (the largest of ten residuals is a coarse quantile),
# so ten draws leave the mean uncertain by about 0.03; thirty, by about 0.02.
DRAWS = 30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=1)
def shipped():
    """The shipped checkpoint, read once: the stages and the lofo cache check all ask for it."""
    from nar_tvm.api import DEFAULT_CHECKPOINT
    from nar_tvm.cost_model import load_checkpoint

    return DEFAULT_CHECKPOINT, load_checkpoint(DEFAULT_CHECKPOINT)


def training_split(predictor):
    from nar_tvm.dataset import load_samples, make_split

    prov = predictor.provenance
    samples = load_samples(TRAINING_DATA, predictor.platform.get("platform_id"), prov.get("labels", "min"))
    return samples, make_split(samples, prov.get("split", "in-domain"), int(prov.get("split_seed", 0)))


# ------------------------------------------------------------------------ lofo
def cached_lofo() -> dict[str, list[dict]]:
    return {row["family"]: row["models"] for row in lofo_rows()}


def run_lofo(args) -> None:
    from nar_tvm.cost_model import TrainConfig
    from nar_tvm.cost_model.uncertainty import (DESCRIPTOR, NOVELTY_QUANTILE, _nearest_l1, op_mix,
                                                reference_thresholds)
    from nar_tvm.training import graphs_of, latencies_of, train_on_dataset

    _, base = shipped()
    prov = base.provenance
    train_cfg = TrainConfig(**prov["train_config"])
    samples, _ = training_split(base)
    families = sorted({s.family for s in samples})
    done = cached_lofo()
    for family in families:
        if family in done or (args.families and family not in args.families.split(",")):
            continue
        log(f"training with {family} left out")
        t0 = time.process_time()
        predictor, history, parts = train_on_dataset(
            TRAINING_DATA, level=prov["level"], split=f"ood:{family}", seed=0,
            platform_id=base.platform.get("platform_id"), model_cfg=replace(base.model.cfg),
            train_cfg=train_cfg, progress=False, node_weight=float(prov.get("node_weight", 0.0)),
            # The shipped checkpoint's tokens (transcendental count, input shapes): the intervals
            # calibrate its errors, not those of the default tokenizer's.
            labels=prov.get("labels", "min"), tokenizer_cfg=base.tokenizer.config)
        test = parts["test"]
        graphs = graphs_of(test, prov["level"])
        pred = predictor.predict(graphs)
        reference, thresholds = reference_thresholds(graphs_of(parts["train"], prov["level"]), predictor.tokenizer.vocab)
        threshold = thresholds[NOVELTY_QUANTILE]
        distance = _nearest_l1(op_mix(graphs, predictor.tokenizer.vocab), reference)
        models = [{"job": s.job, "measured_ms": float(y), "predicted_ms": float(p), "unknown_ops": int(unk),
                   "novel": bool(unk > 0 or d > threshold), "distance": float(d)}
                  for s, y, p, unk, d in zip(test, latencies_of(test), pred.latency_ms, pred.unknown_ops, distance)]
        row = {"family": family, "method": prov.get("method"), "descriptor": DESCRIPTOR,
               "cpu_s": round(time.process_time() - t0, 1),
               "best_epoch": history.best_epoch,
               "val_mape": history.best_val_mape, "threshold": threshold,
               "thresholds": {str(q): t for q, t in thresholds.items()}, "models": models}
        # One write(2) to an O_APPEND file: rows of several processes (--families) never interleave.
        fd = os.open(LOFO_RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)
        ape = np.mean([abs(m["predicted_ms"] / m["measured_ms"] - 1) for m in models])
        log(f"  {family}: MAPE {ape:.3f}, flagged novel {np.mean([m['novel'] for m in models]):.0%}")


# Rows cached before they recorded their method were all runs of this configuration.
UNLABELLED_LOFO_METHOD = "NAR-Former V2 + kernel-sum readout - grouped FFN"


def lofo_rows() -> list[dict]:
    """The cached leave-one-family-out runs; they must be runs of the shipped configuration."""
    rows = [json.loads(line) for line in LOFO_RUNS.read_text().splitlines() if line.strip()] if LOFO_RUNS.exists() else []
    method = shipped()[1].provenance.get("method")
    stale = {r.get("method", UNLABELLED_LOFO_METHOD) for r in rows} - {method}
    if stale:
        raise SystemExit(f"{LOFO_RUNS} holds runs of {sorted(stale)}, not of the shipped {method!r}; "
                         "move it aside and run the lofo stage again")
    return rows


def refresh_lofo_novelty() -> None:
    """Bring cached leave-one-family-out rows to the current novelty check: thresholds at every
    candidate quantile and distances under the current descriptor (uncertainty.DESCRIPTOR).
    The training graphs and vocabulary of each run are a deterministic function of the data and
    the split, so no model is retrained; where the row's descriptor is current, the distances
    recomputed here must equal the recorded ones."""
    from nar_tvm.cost_model.tokenizer import Tokenizer
    from nar_tvm.cost_model.uncertainty import DESCRIPTOR, NOVELTY_QUANTILE, _nearest_l1, op_mix, reference_thresholds
    from nar_tvm.dataset import make_split
    from nar_tvm.training import graphs_of

    rows = lofo_rows()
    if all("thresholds" in r and r.get("descriptor", 1) == DESCRIPTOR for r in rows):
        return
    _, base = shipped()
    samples, _ = training_split(base)
    level = base.provenance["level"]
    for row in rows:
        if "thresholds" in row and row.get("descriptor", 1) == DESCRIPTOR:
            continue
        parts = make_split(samples, f"ood:{row['family']}", 0)
        tokenizer = Tokenizer()
        tokenizer.fit(graphs_of(parts["train"], level))
        reference, thresholds = reference_thresholds(graphs_of(parts["train"], level), tokenizer.vocab)
        by_job = {s.job: s for s in parts["test"]}
        distance = _nearest_l1(op_mix(graphs_of([by_job[m["job"]] for m in row["models"]], level), tokenizer.vocab),
                               reference)
        if row.get("descriptor", 1) == DESCRIPTOR:
            recorded = np.array([m["distance"] for m in row["models"]])
            if not np.allclose(distance, recorded, atol=1e-5):
                raise SystemExit(f"{row['family']}: recomputed novelty distances differ from the recorded ones")
        else:
            for m, d in zip(row["models"], distance):
                unknown = flagged_for_unknown_ops(m, row)
                m.update(distance=float(d), novel=bool(unknown or d > thresholds[NOVELTY_QUANTILE]),
                         unknown_ops=int(m.get("unknown_ops", int(unknown))))
            row["threshold"] = thresholds[NOVELTY_QUANTILE]
        row["thresholds"] = {str(q): t for q, t in thresholds.items()}
        row["descriptor"] = DESCRIPTOR
    LOFO_RUNS.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log(f"brought the cached leave-one-family-out rows to novelty descriptor {DESCRIPTOR} (no retraining)")


def flagged_for_unknown_ops(model: dict, row: dict) -> bool:
    """Whether a held-out model of a leave-one-family-out row has op types unseen in training.
    Rows recorded before unknown-op counts were kept: a model flagged while nearer than the
    run's own threshold was flagged for unknown ops."""
    if "unknown_ops" in model:
        return model["unknown_ops"] > 0
    return model["novel"] and model["distance"] <= row["threshold"]


def lofo_novel(row: dict, quantile: float) -> np.ndarray:
    """Whether each held-out model of a leave-one-family-out row is flagged at `quantile`."""
    threshold = row["thresholds"][str(quantile)]
    return np.array([flagged_for_unknown_ops(m, row) or m["distance"] > threshold for m in row["models"]])


def lofo_coverage(rows: list[dict], quantile: float, q: float, q_novel: float) -> tuple[float, int]:
    """Pooled coverage of `rows`' held-out models with intervals q / q_novel at `quantile`."""
    hits = n = 0
    for row in rows:
        res = np.array([abs(np.log(m["measured_ms"] / m["predicted_ms"])) for m in row["models"]])
        width = np.where(lofo_novel(row, quantile), max(q_novel, q), q)
        hits += int(np.sum(res <= width))
        n += len(res)
    return hits / max(n, 1), n


def choose_novelty_quantile(rows: list[dict], q: float, q_novel: float) -> tuple[float, dict]:
    """The candidate quantile under which the worst-covered held-out family of `rows` is
    covered best; on a tie the largest (it flags fewest in-domain graphs). Returns it and the
    worst family's coverage at each candidate. Not pooled coverage: q_novel is wide enough for
    the hardest families (family_conformal_quantile), so the easy ones are over-covered by
    design, and a pooled target would win its 90% back by flagging fewer of the hard ones."""
    from nar_tvm.cost_model.uncertainty import NOVELTY_QUANTILES

    worst = {qt: min(lofo_coverage([row], qt, q, q_novel)[0] for row in rows) for qt in NOVELTY_QUANTILES}
    best = max(NOVELTY_QUANTILES, key=lambda qt: (round(worst[qt], 6), qt))
    return best, worst


# ------------------------------------------------------------------ intervals
def lofo_residuals_by_family(lofo: dict[str, list[dict]], exclude: str | None = None) -> dict[str, np.ndarray]:
    """|log(measured / predicted)| of each held-out family's models (`exclude` left aside)."""
    return {fam: np.array([abs(np.log(m["measured_ms"] / m["predicted_ms"])) for m in models])
            for fam, models in lofo.items() if fam != exclude}


def run_intervals(args) -> None:
    from nar_tvm.cost_model import save_checkpoint
    from nar_tvm.cost_model.uncertainty import NOVELTY_QUANTILE, fit_uncertainty, reference_mixes
    from nar_tvm.training import graphs_of, latencies_of

    path, base = shipped()
    lofo = cached_lofo()
    samples, parts = training_split(base)
    level = base.provenance["level"]
    novel = lofo_residuals_by_family(lofo) if lofo else None
    train_graphs = graphs_of(parts["train"], level)
    unc = fit_uncertainty(base, train_graphs, graphs_of(parts["val"], level), latencies_of(parts["val"]), novel)
    quantile = NOVELTY_QUANTILE
    if lofo:
        refresh_lofo_novelty()
        quantile, covers = choose_novelty_quantile(lofo_rows(), unc.q, unc.q_novel)
        log("worst held-out family's coverage by novelty quantile: "
            + ", ".join(f"{k}: {v:.3f}" for k, v in covers.items()) + f" -> {quantile}")
        if quantile != NOVELTY_QUANTILE:
            unc.threshold = reference_mixes(train_graphs, base.tokenizer.vocab, quantile=quantile)[1]
    unc.source = (f"q: validation split ({len(parts['val'])} models); q_novel: leave-one-family-out "
                  f"runs ({0 if novel is None else sum(map(len, novel.values()))} models of "
                  f"{0 if novel is None else len(novel)} families, a quantile over families; "
                  "benchmarks/calibration_report.py); "
                  f"novel beyond the {quantile} quantile of training nearest-neighbour distances, "
                  "chosen by the worst held-out family's coverage")
    log(f"q = {unc.q:.4f} (x{np.exp(unc.q):.3f}), q_novel = {unc.q_novel}, novelty threshold {unc.threshold:.3f}")
    if args.write_default:
        base.provenance["uncertainty"] = unc.to_state()
        base.provenance.setdefault("families", sorted({s.family for s in parts["train"]}))
        save_checkpoint(base, path)
        log(f"wrote the interval fit into {path}")


# --------------------------------------------------------------------- report
def coverage(measured, low, high) -> float:
    measured = np.asarray(measured)
    return float(np.mean((measured >= low) & (measured <= high)))


def transfer_rows(base, samples, label: str, floor: dict | None, rng_seed: int = 0, shots=SHOTS,
                  graphs: list | None = None) -> list[dict]:
    """K-shot calibration on `samples` of another machine/platform: shots drawn at random,
    tested on the rest, DRAWS times per K."""
    from nar_tvm.cost_model import calibration
    from nar_tvm.training import graphs_of, latencies_of

    level = base.provenance["level"]
    graphs = graphs_of(samples, level) if graphs is None else graphs
    measured = latencies_of(samples)
    tokens = base.tokenizer.encode_many(graphs)
    feats = calibration.features(base, graphs, tokens)
    res = base.predict(graphs)
    unc = base.uncertainty
    q_base = unc.half_widths(res.novel) if unc is not None else np.zeros(len(graphs))
    rows = []
    rng = np.random.default_rng(rng_seed)
    for k in shots:
        mapes, covers, methods = [], [], []
        for draw in range(DRAWS if k else 1):
            order = rng.permutation(len(graphs))
            shots, test = order[:k], order[k:]
            if k:
                fit = calibration.fit(base, [graphs[i] for i in shots], measured[shots])
                if fit.model is not None:
                    from nar_tvm.cost_model import LatencyPredictor

                    tuned = LatencyPredictor(base.tokenizer, fit.model)
                    pred = tuned.predict_tokens([tokens[i] for i in test])
                else:
                    pred = np.exp(calibration.apply(fit.method, fit.params, calibration._subset(feats, test)))
                q_cal = fit.half_width()
                methods.append(fit.method)
            else:
                pred, q_cal = res.latency_ms[test], 0.0
            q = np.maximum(q_base[test], q_cal)
            mapes.append(float(np.mean(np.abs(pred / measured[test] - 1))))
            covers.append(coverage(measured[test], pred * np.exp(-q), pred * np.exp(q)))
        rows.append({"target": label, "k": k, "draws": len(mapes), "mape": float(np.mean(mapes)),
                     "mape_std": float(np.std(mapes)), "coverage": float(np.mean(covers)),
                     "coverage_std": float(np.std(covers)),
                     "methods": {m: methods.count(m) for m in sorted(set(methods))},
                     "floor_mape": None if floor is None else floor["mape"], "n_test": int(len(graphs) - k)})
        log(f"  {label} K={k}: MAPE {rows[-1]['mape']:.3f} ± {rows[-1]['mape_std']:.3f}, "
            f"coverage {rows[-1]['coverage']:.2f}, methods {rows[-1]['methods']}")
    return rows


def split_panel(samples: list, trained_on: set, trained_families: set) -> tuple[list, list]:
    """(models of the families the predictor trained on, but not the models themselves;
    models of the families it never saw). A panel measures every zoo family, so a machine's
    store holds both: the first measure the machine, the second the model's reach."""
    known = [s for s in samples if s.family in trained_families and s.job.split("@")[0] not in trained_on]
    return known, [s for s in samples if s.family not in trained_families]


def unseen_family_rows(base, machine: str, unseen: list, graphs: list, panel: list | None,
                       panel_graphs: list | None) -> list[dict]:
    """Models of families outside the training data (`graphs` are theirs), measured on a machine
    that has a panel: is each flagged, and does its interval (after a 10-shot calibration on that
    machine's panel of known families, seeded) contain its measured latency?"""
    from nar_tvm.cost_model import LatencyPredictor, calibration
    from nar_tvm.training import latencies_of

    measured = latencies_of(unseen)
    res = base.predict(graphs)
    rows = []
    variants = [("uncalibrated", None)]
    if panel:
        shots = np.random.default_rng(0).permutation(len(panel))[:10]
        fit = calibration.fit(base, [panel_graphs[i] for i in shots], latencies_of(panel)[shots])
        variants.append((f"calibrated on 10 panel models ({fit.method})", fit))
    for label, fit in variants:
        if fit is None:
            pred, q = res.latency_ms, base.uncertainty.half_widths(res.novel)
        else:
            if fit.model is not None:
                pred = LatencyPredictor(base.tokenizer, fit.model).predict(graphs).latency_ms
            else:
                pred = np.exp(calibration.apply(fit.method, fit.params, calibration.features(base, graphs)))
            q = np.maximum(base.uncertainty.half_widths(res.novel), fit.half_width())
        for s, p, qq, y, novel in zip(unseen, pred, q, measured, res.novel):
            rows.append({"machine": machine, "variant": label, "model": s.name, "family": s.family,
                         "measured_ms": float(y), "predicted_ms": float(p), "low_ms": float(p * np.exp(-qq)),
                         "high_ms": float(p * np.exp(qq)), "novel": bool(novel),
                         "inside": bool(p * np.exp(-qq) <= y <= p * np.exp(qq))})
    log(f"unseen families on {machine}: " + ", ".join(
        f"{v}: {np.mean([r['inside'] for r in rows if r['variant'] == v]):.0%} inside" for v, _ in variants))
    return rows


def unseen_error_by_kind(base, machine: str, unseen: list, graphs: list, panel: list | None,
                         panel_graphs: list | None) -> list[dict]:
    """Where the error on unseen families sits: measured against predicted kernel time, pooled
    by kernel kind per family, after scaling every prediction by this machine's median
    measured / predicted ratio on its panel models of known families (so that what is left
    is the model's error, not the machine's)."""
    from nar_tvm.kernel_errors import largest_kernel_errors, samples_kernel_error
    from nar_tvm.training import latencies_of

    if not base.predicts_kernels or not panel:
        return []
    scale = float(np.median(latencies_of(panel) / base.predict(panel_graphs).latency_ms))
    rows = []
    for family in sorted({s.family for s in unseen}):
        members = [i for i, s in enumerate(unseen) if s.family == family]
        pooled = samples_kernel_error(base, [unseen[i] for i in members], [graphs[i] for i in members], scale)
        for row in largest_kernel_errors(pooled):
            rows.append({"machine": machine, "family": family, "kind": row.pop("kind"), "models": len(members),
                         "scale": scale, **row})
    log(f"unseen families on {machine}: kernel error by kind, machine scale {scale:.3f}")
    return rows


def other_stores(machine: str) -> list[Path]:
    """A machine's stores beside its panel: zoo models measured there (`zoo-<machine>`) and
    models of families the zoo did not have yet (`unseen-families-<machine>`)."""
    return [store for store in (DATA / f"zoo-{machine}", DATA / f"unseen-families-{machine}") if store.exists()]


def machine_unseen_samples(machine: str, platform_id: str, unseen: list, trained_on: set,
                           trained_families: set) -> list:
    """A machine's models of families the predictor never saw: its panel's (`unseen`) and those of
    its other stores."""
    from nar_tvm.dataset import load_samples

    for store in other_stores(machine):
        unseen = unseen + split_panel(load_samples(store, platform_id, "min"), trained_on, trained_families)[1]
    return unseen


def machine_unseen_rows(base, machine: str, platform_id: str, panel: list, unseen: list, panel_graphs: list,
                        trained_on: set, trained_families: set) -> dict[str, list[dict]]:
    """The unseen-family rows of one machine: its panel's models of families the predictor never
    saw, and those of its other stores."""
    from nar_tvm.training import graphs_of

    unseen = machine_unseen_samples(machine, platform_id, unseen, trained_on, trained_families)
    if not unseen:
        return {}
    graphs = graphs_of(unseen, base.provenance["level"])
    return {"unseen_families": unseen_family_rows(base, machine, unseen, graphs, panel, panel_graphs),
            "unseen_error_by_kind": unseen_error_by_kind(base, machine, unseen, graphs, panel, panel_graphs)}


def panels(trained_on: set, trained_families: set):
    """(machine, its panel store, platform id, models of known families, models of unseen ones)
    for every panel store."""
    from nar_tvm.dataset import load_samples, platforms

    for store in sorted(DATA.glob("panel-*")):
        ids = list(platforms(store))
        if len(ids) != 1:
            raise SystemExit(f"{store}: a panel store holds one machine's platform, this one holds {ids}")
        yield (store.name.removeprefix("panel-"), store, ids[0],
               *split_panel(load_samples(store, ids[0], "min"), trained_on, trained_families))


def trained_sets(parts) -> tuple[set, set]:
    """(zoo jobs, families) the shipped predictor trained or validated on."""
    seen = parts["train"] + parts["val"]
    return {s.job.split("@")[0] for s in seen}, {s.family for s in seen}


def shipped_and_report() -> tuple:
    """(shipped predictor, the zoo jobs and the families it trained or validated on, the recorded
    calibration_report.json): what a stage that redoes part of the report starts from."""
    _, base = shipped()
    _, parts = training_split(base)
    return (base, *trained_sets(parts), json.loads(REPORT_JSON.read_text()))


def run_unseen(args) -> None:
    """Recompute only the unseen-family rows of calibration_report.json (after measuring more
    models of those families), and rewrite the markdown."""
    from nar_tvm.training import graphs_of

    base, trained_on, trained_families, out = shipped_and_report()
    out["unseen_families"], out["unseen_error_by_kind"] = [], []
    for machine, _, platform_id, panel, unseen in panels(trained_on, trained_families):
        rows = machine_unseen_rows(base, machine, platform_id, panel, unseen, graphs_of(panel, base.provenance["level"]),
                                   trained_on, trained_families)
        for key, value in rows.items():
            out[key] += value
    REPORT_JSON.write_text(json.dumps(out, indent=1))
    write_markdown(out)


def run_own(args) -> None:
    """Each family the predictor never saw, on each machine that measured enough of it, calibrated
    on K of its own models drawn at random and tested on the others; into calibration_report.json."""
    base, trained_on, trained_families, out = shipped_and_report()
    out["own_family"] = []
    for machine, _, platform_id, _, unseen in panels(trained_on, trained_families):
        unseen = machine_unseen_samples(machine, platform_id, unseen, trained_on, trained_families)
        for family in sorted({s.family for s in unseen}):
            members = [s for s in unseen if s.family == family]
            if len(members) < OWN_MIN_MODELS:
                log(f"{machine} {family}: {len(members)} models, too few for {max(OWN_SHOTS)} shots and a test set")
                continue
            out["own_family"] += transfer_rows(base, members, f"{machine} {family}", None, shots=OWN_SHOTS)
    REPORT_JSON.write_text(json.dumps(out, indent=1))
    write_markdown(out)


def run_report(args) -> None:
    from nar_tvm.dataset import DatasetStore, load_samples, noise_floor
    from nar_tvm.training import graphs_of, latencies_of

    path, base = shipped()
    samples, parts = training_split(base)
    trained_on, trained_families = trained_sets(parts)
    level = base.provenance["level"]
    out = {"checkpoint": str(path.relative_to(REPO)), "uncertainty_source": (base.provenance.get("uncertainty") or {}).get("source"),
           "cross_machine": [], "cross_platform": [], "coverage": {}, "unseen_families": [],
           "unseen_error_by_kind": []}

    # In-domain coverage on the test split (never used to fit anything).
    test = parts["test"]
    res = base.predict(graphs_of(test, level))
    out["coverage"]["in-domain test"] = {"n": len(test), "coverage": coverage(latencies_of(test), res.low_ms, res.high_ms),
                                         "flagged_novel": float(np.mean(res.novel))}
    # Leave-one-family-out: each family's interval width comes from the other families' runs.
    lofo = cached_lofo()
    if lofo and base.uncertainty is not None:
        from nar_tvm.cost_model.uncertainty import family_conformal_quantile

        refresh_lofo_novelty()
        rows = {r["family"]: r for r in lofo_rows()}
        per_family = {}
        for fam, models in sorted(lofo.items()):
            # Everything about the family's intervals comes from the other families' runs: the
            # width for novel graphs and the novelty quantile.
            q_novel = family_conformal_quantile(lofo_residuals_by_family(lofo, exclude=fam))
            quantile, _ = choose_novelty_quantile([r for f, r in rows.items() if f != fam], base.uncertainty.q, q_novel)
            novel = lofo_novel(rows[fam], quantile)
            q = np.where(novel, max(q_novel, base.uncertainty.q), base.uncertainty.q)
            pred = np.array([m["predicted_ms"] for m in models])
            meas = np.array([m["measured_ms"] for m in models])
            per_family[fam] = {"n": len(models), "coverage": coverage(meas, pred * np.exp(-q), pred * np.exp(q)),
                               "flagged_novel": float(np.mean(novel)), "novelty_quantile": quantile,
                               "mape": float(np.mean(np.abs(pred / meas - 1)))}
        total = sum(v["n"] for v in per_family.values())
        out["coverage"]["leave-one-family-out"] = {
            "n": total, "coverage": sum(v["coverage"] * v["n"] for v in per_family.values()) / total,
            "families": per_family}

    # Each machine: a panel store, and possibly other stores measured beside it (other_stores).
    for machine, store, platform_id, panel, unseen in panels(trained_on, trained_families):
        floor = noise_floor(DatasetStore(store))
        log(f"cross-machine: {store.name} ({len(panel)} models of known families, re-measurement floor "
            f"{None if floor is None else round(floor['mape'], 4)})")
        # Deserialising a stored graph is most of what these rows cost: once per machine.
        panel_graphs = graphs_of(panel, level)
        out["cross_machine"] += transfer_rows(base, panel, store.name, floor, graphs=panel_graphs)
        for key, rows in machine_unseen_rows(base, machine, platform_id, panel, unseen, panel_graphs,
                                             trained_on, trained_families).items():
            out[key] += rows
    test_jobs = {s.job.split("@")[0] for s in parts["test"]}
    for name in PLATFORMS:
        store = DATA / name
        if not store.exists():
            continue
        held = [s for s in load_samples(store, None, "min") if s.job.split("@")[0] in test_jobs]
        floor = noise_floor(DatasetStore(store))
        log(f"cross-platform: {name} ({len(held)} models of the training platform's test split)")
        out["cross_platform"] += transfer_rows(base, held, name, floor, shots=PLATFORM_SHOTS)
    REPORT_JSON.write_text(json.dumps(out, indent=1))
    write_markdown(out)


def write_markdown(out: dict) -> None:
    lines = ["# Calibration and uncertainty report", "",
             "Regenerate: `python benchmarks/calibration_report.py report` (after the `lofo` and `intervals` "
             "stages; see the script's docstring). Checkpoint: `" + out["checkpoint"] + "`.", "",
             f"Interval fit: {out['uncertainty_source']}.", ""]
    lines += ["## Coverage of the nominal 90% interval", "", "| where | models | coverage | flagged unlike training |",
              "|---|---|---|---|"]
    for where, c in out["coverage"].items():
        lines.append(f"| {where} | {c['n']} | {c['coverage']:.1%} | {c.get('flagged_novel', float('nan')):.0%} |"
                     if "flagged_novel" in c else f"| {where} | {c['n']} | {c['coverage']:.1%} | |")
    fams = out["coverage"].get("leave-one-family-out", {}).get("families", {})
    if fams:
        lines += ["", "Leave-one-family-out, per family (the width for novel graphs and the novelty quantile "
                      "both chosen on the other nine families' runs):", "",
                  "| family | models | MAPE | coverage | flagged | novelty quantile |", "|---|---|---|---|---|---|"]
        for fam, v in fams.items():
            lines.append(f"| {fam} | {v['n']} | {v['mape']:.3f} | {v['coverage']:.1%} | {v['flagged_novel']:.0%} | "
                         f"{v.get('novelty_quantile', '')} |")
    if out.get("unseen_families"):
        lines += ["", "## Families the predictor never saw, on the panels' machines", "",
                  "Per family: MAPE, median predicted / measured, and how many of the models get the "
                  "\"unlike the training data\" flag and an interval that contains their measured latency "
                  "(per model in calibration_report.json).", "",
                  "| machine | family | variant | models | MAPE | predicted / measured (median) | flagged | inside 90% interval |",
                  "|---|---|---|---|---|---|---|---|"]
        groups: dict = {}
        for r in out["unseen_families"]:
            groups.setdefault((r["machine"], r["family"], r["variant"]), []).append(r)
        for (machine, family, variant), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
            ratio = np.array([r["predicted_ms"] / r["measured_ms"] for r in rs])
            lines.append(f"| {machine} | {family} | {variant} | {len(rs)} | {np.mean(np.abs(ratio - 1)):.3f} | "
                         f"{np.median(ratio):.2f} | {np.mean([r['novel'] for r in rs]):.0%} | "
                         f"{np.mean([r['inside'] for r in rs]):.0%} |")
    if out.get("unseen_error_by_kind"):
        rows = out["unseen_error_by_kind"]
        lines += ["", "Where their error sits: kernel time measured against predicted, pooled by kernel kind (anchor op, "
                  "convolution kind, costly element-wise functions fused in), predictions scaled by this machine's "
                  "median measured / predicted ratio on its panel of known families ("
                  + ", ".join(sorted({f"{r['machine']} x{r['scale']:.3f}" for r in rows})) + "); "
                  "the three kinds with the largest error per family:", "",
                  "| machine | family | kernel kind | kernels | measured ms | predicted ms | predicted / measured | "
                  "share of the family's kernel error |", "|---|---|---|---|---|---|---|---|"]
        for machine, family in sorted({(r["machine"], r["family"]) for r in rows}):
            for r in [r for r in rows if (r["machine"], r["family"]) == (machine, family)][:3]:
                lines.append(f"| {machine} | {family} | {r['kind']} | {r['kernels']} | {r['measured_ms']:.1f} | "
                             f"{r['predicted_ms']:.1f} | {r['predicted_ms'] / r['measured_ms']:.2f} | "
                             f"{r['error_share']:.0%} |")
    for key, title in (("cross_machine", "Another machine (held-out panel measured there)"),
                       ("cross_platform", "Another platform of the same machine (models of the test split)"),
                       ("own_family", "A family the predictor never saw, calibrated on K of its own models "
                                      "(`nar-tvm calibrate --models`), tested on the family's other models")):
        if not out.get(key):
            continue
        lines += ["", f"## {title}", ""]
        if key == "own_family":
            lines += [f"K models drawn at random, {DRAWS} times, from the family's models measured on that machine; "
                      "the family's other models are tested (K = 0: the predictor as shipped). A machine with "
                      f"fewer than {OWN_MIN_MODELS} models of a family is left out.", ""]
        lines += ["| target | K shots | draws | MAPE (mean ± sd over draws) | 90% coverage (mean ± sd over draws) | "
                  "methods chosen | re-measurement MAPE |",
                  "|---|---|---|---|---|---|---|"]
        for r in out[key]:
            floor = "" if r["floor_mape"] is None else f"{r['floor_mape']:.3f}"
            methods = ", ".join(f"{m} {n}" for m, n in r["methods"].items()) or "none"
            lines.append(f"| {r['target']} | {r['k']} | {r['draws']} | {r['mape']:.3f} ± {r['mape_std']:.3f} | "
                         f"{r['coverage']:.1%} ± {r['coverage_std']:.1%} | {methods} | {floor} |")
    (REPO / "benchmarks" / "calibration_report.md").write_text("\n".join(lines) + "\n")
    log("wrote benchmarks/calibration_report.md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    lofo = sub.add_parser("lofo")
    lofo.add_argument("--families", help="comma-separated: only these (to spread the runs over processes)")
    lofo.set_defaults(func=run_lofo)
    q = sub.add_parser("intervals")
    q.add_argument("--write-default", action="store_true", help="store the fit in the shipped checkpoint")
    q.set_defaults(func=run_intervals)
    sub.add_parser("report").set_defaults(func=run_report)
    sub.add_parser("unseen").set_defaults(func=run_unseen)
    sub.add_parser("own").set_defaults(func=run_own)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
