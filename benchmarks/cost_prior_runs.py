"""Variants of the shipped recipe, each trained on one split and seed and chosen on validation.

Trains the recipe of the checkpoint shipped before the prior (NAR-Former V2, kernel-sum readout,
no grouped FFN, kernel times weight 1, fused graphs, labels "min"; cost_model.recipes.TRAINING)
with and without `cost_prior` (with it, the shipped recipe), optionally with the paper's
attention form (`--attention sigmoid-adjacency`: a sigmoid of the query-key score times the
normalised adjacency, one head, as the official NAR-Former V2 code computes it), with the prior
also pricing transcendental evaluations (`--transcendentals`), with each node's first input shape
in its token (`--input-shapes`), with another number of encoder blocks (`--layers`; 0 prices each
kernel from its own token), and appends its validation and test MAPE (and, since session 25,
every validation and test model's prediction) to benchmarks/cost_prior_runs.jsonl. Splits:
`in-domain`, `ood:<family>` (the family held out of training and validation), and `size` (train on the smallest 80% of
graphs by FLOPs, validate on the next 10%, test on the largest 10%: extrapolation to larger
graphs). `nnlp` in place of `prior` trains the baseline the out-of-domain target is held
against (the latency report's NNLP as specified) on the same split. One run is 5-11 minutes on
one core, depending on the machine. `--dataset` trains on another store (rows then name it,
and the table keeps stores apart): another machine's data is never pooled with this one's.
`--measured-before` trains on what a store held at a time, so runs on a store that is still
being profiled stay comparable. `batch` runs many in parallel workers, recording each row as
it ends and skipping recorded ones, so it resumes; `--with-predictions` also reruns the rows
recorded without per-model predictions, which `ensemble` needs (and says when a rerun does not
reproduce its row).

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py size prior 0 [--save ckpt.pt]
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py in-domain prior 0 --attention sigmoid-adjacency
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/cost_prior_runs.py in-domain prior 0 --dataset benchmarks/data/zoo-epyc-znver3-1
    OMP_NUM_THREADS=1 python benchmarks/cost_prior_runs.py batch --variants prior nnlp --splits ood:all \
        --seeds 0 --dataset benchmarks/data/zoo-epyc-znver3-1 --measured-before 2026-12-04T13:20 --jobs 16
    python benchmarks/cost_prior_runs.py table
    python benchmarks/cost_prior_runs.py kinds
    OMP_NUM_THREADS=1 python benchmarks/cost_prior_runs.py batch --variants prior --transcendentals [--input-shapes] \
        --splits ood:all --seeds 1 2 --dataset benchmarks/data/zoo-epyc-znver3-1 \
        --measured-before 2026-12-04T12:31:37 --jobs 2 --with-predictions
    python benchmarks/cost_prior_runs.py ensemble --dataset benchmarks/data/zoo-epyc-znver3-1 --measured-before 2026-12-04T12:31:37
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "cpu-znver4-1t"
RUNS = REPO / "benchmarks" / "cost_prior_runs.jsonl"
# The latency report's method that was shipped before the prior.
BASE_METHOD = "NAR-Former V2 + kernel-sum readout - grouped FFN"


# The baseline the out-of-domain target is held against, as the latency report specifies it.
NNLP_METHOD = "NNLP (GraphSAGE)"
METHODS = {"shipped": BASE_METHOD, "nnlp": NNLP_METHOD}


@dataclass(frozen=True)
class Run:
    """One training run: which split and seed, which network and options, on which data."""
    split: str
    seed: int = 0
    method: str = "shipped"  # a key of METHODS; "nnlp" has no prior, attention or transcendental options
    prior: bool = True
    attention: str = "softmax"
    transcendentals: bool = False
    input_shapes: bool = False  # tokens also carry each node's first input shape
    layers: int | None = None  # encoder blocks; None: the recipe's. 0: each kernel priced from its own token alone
    data: Path = DATA
    measured_before: str | None = None
    device: str = "cpu"
    parallel_runs: int = 1  # not part of what is measured: it says how busy the machine was
    threads: int = 1  # torch threads of a batch worker; also only how busy the machine was


def trained_on(parallel_runs: int, threads: int = 1) -> str:
    """Where a run trained: cpu_s compares only between rows with the same machine and load."""
    import torch

    from nar_tvm.platform import cpu_model_name

    return (f"{cpu_model_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{parallel_runs} run{'s' if parallel_runs > 1 else ''} in parallel"
            + (f", {threads} threads each" if threads > 1 else ""))


def run(spec: Run, save: str | None = None) -> dict:
    from nar_tvm.cost_model import save_checkpoint
    from nar_tvm.cost_model.tokenizer import TokenizerConfig
    from nar_tvm.training import evaluate_predictor, graphs_of, train_on_dataset

    from latency_report_protocol import TRAIN, methods
    from nar_tvm.kernel_errors import samples_kernel_error

    base = next(m for m in methods(TRAIN.epochs) if m.name == METHODS[spec.method])
    cfg = base.model_cfg
    if spec.method == "shipped":
        cfg = replace(cfg, cost_prior={} if spec.prior else None)
        if spec.attention != cfg.attention:
            # The paper's attention has a single head: its score gates the adjacency, one per edge.
            cfg = replace(cfg, attention=spec.attention, n_heads=1)
        if spec.layers is not None:
            cfg = replace(cfg, n_layers=spec.layers)
    start = time.process_time()
    predictor, history, parts = train_on_dataset(
        spec.data, level="fused", split=spec.split, seed=spec.seed, model_cfg=cfg,
        train_cfg=replace(TRAIN, seed=spec.seed, device=spec.device), progress=False, node_weight=base.node_weight,
        labels="min", tokenizer_cfg=TokenizerConfig.with_options(spec.transcendentals, spec.input_shapes),
        measured_before=spec.measured_before)
    if save:
        # The names the calibration report's leave-one-family-out cache and `nar-tvm info` go by.
        predictor.provenance.update(
            method=configuration_label(with_defaults(_row_of(spec)), METHODS[spec.method]),
            dataset=str(spec.data.relative_to(REPO)) if spec.data.is_relative_to(REPO) else str(spec.data),
            dataset_models=sum(len(p) for p in parts.values()), report="benchmarks/cost_prior_runs.py")
        save_checkpoint(predictor, save)
    evaluated = {part: evaluate_predictor(predictor, parts[part]) for part in ("val", "test")}
    scores = {part: e["overall"] for part, e in evaluated.items()}
    # Rows carry only what differs from the first rows' settings (with_defaults fills them in).
    first_rows = with_defaults({})
    return {**{k: v for k, v in {**_row_of(spec), "device": spec.device}.items()
               if k not in first_rows or v != first_rows[k]},
            "models": sum(len(p) for p in parts.values()),
            "cpu_s": round(time.process_time() - start), "trained_on": trained_on(spec.parallel_runs, spec.threads),
            "best_epoch": history.best_epoch,
            **{f"{part}_{metric}": scores[part][key] for part in ("val", "test")
               for metric, key in (("mape", "mape"), ("acc10", "acc@10%"))},
            "test_family_mape": {f: r["mape"] for f, r in evaluated["test"]["families"].items()},
            # Every model's prediction, so that configurations can be combined or compared per model
            # (`ensemble`) without training them again.
            "predicted_ms": {part: {s.job: round(float(ms), 4) for s, ms in zip(parts[part], evaluated[part]["pred"])}
                             for part in ("val", "test")},
            **({"kernel_kinds": samples_kernel_error(predictor, parts["test"], graphs_of(parts["test"], "fused"))}
               if spec.split.startswith("ood:") and predictor.predicts_kernels else {})}


def _run_and_record(spec: Run) -> dict:
    import torch

    torch.set_num_threads(spec.threads)
    row = run(spec)
    record(row)
    return row


def pending(specs: list[Run], with_predictions: bool = False, done: dict | None = None) -> list[Run]:
    """The runs of `specs` not recorded yet; `with_predictions`: also those recorded without
    per-model predictions (rows before 2026-12-05), which `ensemble` cannot combine. `done`:
    the recorded rows by run_id, if the caller has read them."""
    done = {run_id(r): r for r in recorded()} if done is None else done
    return [s for s in specs if (old := done.get(run_id(_row_of(s)))) is None
            or (with_predictions and "predicted_ms" not in old)]


def rerun_differs(old: dict | None, new: dict) -> str | None:
    """What a rerun changed of its recorded row's results, if anything: training on the CPU is
    reproducible on one machine and torch version, so a difference says the run is not the one
    recorded (and its row, now replaced, was)."""
    keys = ("val_mape", "test_mape", "best_epoch")
    if old is None or all(old.get(k) == new.get(k) for k in keys):
        return None
    return (f"{new['split']} seed {new['seed']}: the rerun differs from its recorded row ("
            + ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)) + ")")


def batch(specs: list[Run], jobs: int, deadline_min: float | None = None, with_predictions: bool = False) -> list[dict]:
    """Runs `specs` in `jobs` worker processes, recording each row as it finishes; with a
    deadline, runs not started by then are dropped (a later batch picks them up).
    `with_predictions`: see `pending`."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    before = {run_id(r): r for r in recorded()}
    todo = pending(specs, with_predictions, before)
    deadline = time.monotonic() + 60 * deadline_min if deadline_min is not None else None
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool, \
            tqdm(total=len(todo), desc="runs", unit="run") as bar:
        rows = []
        for row in started_before(pool, _run_and_record, todo, jobs, deadline):
            if (changed := rerun_differs(before.get(run_id(row)), row)) is not None:
                tqdm.write(changed)
            rows.append(row)
            bar.update()
    return rows


def started_before(pool, fn, items: list, jobs: int, deadline: float | None):
    """Yields `fn(item)` for `items` as they finish, starting an item only while the clock
    (time.monotonic) is before `deadline`. At most `jobs` items are in `pool` at once: an
    executor hands submitted work to its workers' queue, where cancel() no longer reaches it,
    so submitting everything up front would let queued runs start long after the deadline."""
    from concurrent.futures import FIRST_COMPLETED, wait

    waiting, running = list(items), set()
    while waiting or running:
        while waiting and len(running) < jobs and (deadline is None or time.monotonic() < deadline):
            running.add(pool.submit(fn, waiting.pop(0)))
        if not running:
            return
        finished, running = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            yield fut.result()


# Rows up to 2026-12-04 wrote `true` for a count that charged every transcendental fused into a
# kernel once per element of the kernel's output, so a squeeze-excitation gate (a sigmoid per
# channel, broadcast over the feature map) was charged as if it ran over the whole map. Rows since
# count each fused op on its own output (tokenizer.transcendental_evaluations) and say so.
def transcendentals_field(spec: Run):
    return "fused ops" if spec.transcendentals else False


def transcendentals_label(value) -> str:
    """How a row's `transcendentals` field reads in a table: nothing when off."""
    return f" + transcendentals ({'kernel outputs' if value is True else value})" if value else ""


def input_shapes_label(value: bool) -> str:
    return " + input shapes" if value else ""


def configuration_label(row: dict, method_name: str | None = None) -> str:
    """A row's configuration as the tables name it ("shipped + prior + input shapes"); given the
    method's full name, as a checkpoint's provenance does ("NAR-Former V2 ... + cost prior ...")."""
    if row["method"] == "nnlp":
        return method_name or row["method"]
    return ((method_name or row["method"]) + ((" + cost prior" if method_name else " + prior") if row["prior"] else "")
            + transcendentals_label(row["transcendentals"]) + input_shapes_label(row["input_shapes"])
            + ("" if row["attention"] == "softmax" else f" ({row['attention']})")
            + ("" if row["layers"] is None else f" ({row['layers']} layers)"))


def _row_of(spec: Run) -> dict:
    """The identifying fields of the row `spec` will write (run_id's input)."""
    return {"split": spec.split, "prior": spec.prior and spec.method == "shipped", "attention": spec.attention,
            "transcendentals": transcendentals_field(spec), "input_shapes": spec.input_shapes, "seed": spec.seed,
            "method": spec.method, "layers": spec.layers,
            "dataset": spec.data.name, "measured_before": spec.measured_before}


def with_defaults(row: dict) -> dict:
    """Rows written before the attention, dataset, transcendentals, method, layers and snapshot options
    trained the shipped recipe's default attention on all of DATA on CPU, without a
    transcendental count."""
    return {"attention": "softmax", "dataset": DATA.name, "transcendentals": False, "input_shapes": False,
            "method": "shipped", "layers": None,
            "measured_before": None, "device": "cpu", **row}


def recorded() -> list[dict]:
    return [with_defaults(json.loads(line)) for line in RUNS.read_text().splitlines() if line.strip()]


def table() -> str:
    import numpy as np

    rows = recorded()
    lines = ["| dataset | measured before | split | method | cost prior | attention | seeds | validation MAPE "
             "| test MAPE | test Acc(10%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    variant = ("method", "prior", "attention", "transcendentals", "input_shapes", "layers")
    for data in sorted({(r["dataset"], r["measured_before"] or "") for r in rows},
                       key=lambda k: (k[0] != DATA.name, k)):
        here = [r for r in rows if (r["dataset"], r["measured_before"] or "") == data]
        for split in sorted({r["split"] for r in here}):
            in_split = [r for r in here if r["split"] == split]
            for v in sorted({tuple(r[k] for k in variant) for r in in_split},
                            key=lambda v: (v[0] != "shipped", v[1], v[2] != "softmax", str(v[3]), v[4], str(v[5]))):
                sel = sorted((r for r in in_split if tuple(r[k] for k in variant) == v), key=lambda r: r["seed"])
                method, prior, attention, transcendentals, input_shapes, layers = v

                def cell(key, fmt="{:.4f}"):
                    x = np.array([r[key] for r in sel])
                    return fmt.format(x.mean()) + (f" ± {x.std(ddof=1):.4f}" if len(x) > 1 else "")
                lines.append(f"| {data[0]} | {data[1] or 'all'} | {split} | {method}{input_shapes_label(input_shapes)}"
                             f"{'' if layers is None else f' ({layers} layers)'} | "
                             f"{('yes' if prior else 'no') + transcendentals_label(transcendentals)} | "
                             f"{attention} | {', '.join(str(r['seed']) for r in sel)} | {cell('val_mape')} | "
                             f"{cell('test_mape')} | {cell('test_acc10', '{:.3f}')} |")
    return "\n".join(lines)


def as_run(row: dict) -> dict:
    """A recorded row in the latency report's run format, for its target functions."""
    return {"overall": {"mape": row["test_mape"]}, "kernel_kinds": row.get("kernel_kinds"),
            "families": {f: {"mape": m} for f, m in row["test_family_mape"].items()}}


def snapshot_rows(dataset: str, measured_before: str | None) -> list[dict]:
    """The recorded runs on one store as it was at `measured_before`."""
    rows = [r for r in recorded() if r["dataset"] == dataset and r["measured_before"] == measured_before]
    if not rows:
        raise ValueError(f"no recorded runs on {dataset} measured before {measured_before}")
    return rows


# The two configurations with the lowest held-out means on the sixteen families (families16.md):
# the transcendental count, without and with the input shapes.
ENSEMBLE = tuple(configuration_label(with_defaults(_row_of(Run("", transcendentals=True, input_shapes=shapes))))
                 for shapes in (False, True))


def ensemble(dataset: str, measured_before: str | None, members: tuple[str, ...] = ENSEMBLE) -> str:
    """Each split and seed that every member configuration ran (with per-model predictions),
    combined per model by the geometric mean of the members' predictions: test MAPE of each
    member and of the combination. A fixed equal weight, because validation is drawn from the
    training families and cannot say which member serves a family it has not seen."""
    import numpy as np

    from nar_tvm.cost_model.metrics import mape
    from nar_tvm.dataset import load_samples

    runs = {}
    snapshot = snapshot_rows(dataset, measured_before)
    for r in snapshot:
        if "predicted_ms" in r and (label := configuration_label(r)) in members:
            runs.setdefault((r["split"], r["seed"]), {})[label] = r["predicted_ms"]["test"]
    runs = {k: v for k, v in runs.items() if len(v) == len(members)}
    if not runs:
        raise ValueError(f"no split and seed of {dataset} measured before {measured_before} was run by all of "
                         f"{list(members)} with per-model predictions")
    measured = {s.job: s.latency_ms for s in load_samples(DATA.parent / dataset, None, "min", measured_before)}
    lines = ["| split | seed | " + " | ".join(members) + " | geometric mean |", "|---|---|" + "---|" * (len(members) + 1)]
    scores = []
    for (split, seed), by_member in sorted(runs.items()):
        jobs = list(by_member[members[0]])
        truth = [measured[j] for j in jobs]
        preds = np.array([[by_member[m][j] for j in jobs] for m in members])
        scores.append([mape(p, truth) for p in (*preds, np.exp(np.log(preds).mean(axis=0)))])
        lines.append(f"| {split} | {seed} | " + " | ".join(f"{m:.3f}" for m in scores[-1]) + " |")
    lines.append(f"| **mean** | {len(scores)} runs | " + " | ".join(f"**{m:.3f}**" for m in np.mean(scores, axis=0)) + " |")
    lines += ensemble_targets(snapshot, dict(zip(sorted(runs), scores)), members)
    splits, seeds = complete_seeds(snapshot, runs)
    if len(seeds) > 1:
        # A held-out split tests the whole family whatever the seed, so seeds combine per model too.
        pooled = []
        for split in splits:
            jobs = list(runs[split, seeds[0]][members[0]])
            preds = np.array([[runs[split, s][m][j] for j in jobs] for s in seeds for m in members])
            pooled.append(mape(np.exp(np.log(preds).mean(axis=0)), [measured[j] for j in jobs]))
        lines += ["", f"Every run of seeds {', '.join(map(str, seeds))} combined ({len(seeds) * len(members)} predictions "
                      f"per model, the same geometric mean): mean over the {len(splits)} held-out families "
                      f"**{np.mean(pooled):.3f}**, worst {max(pooled):.3f}."]
    return "\n".join(lines)


def complete_seeds(snapshot: list[dict], keys) -> tuple[list[str], list[int]]:
    """The snapshot's held-out splits, and the seeds among `keys` ((split, seed) pairs) that
    hold out every one of them."""
    splits = sorted({r["split"] for r in snapshot if r["split"].startswith("ood:")})
    return splits, sorted(s for s in {seed for _, seed in keys} if all((split, s) in keys for split in splits))


def ensemble_targets(snapshot: list[dict], scores: dict[tuple[str, int], list[float]], members) -> list[str]:
    """The sixteen-family lines for the seeds whose combination held out every family of the
    snapshot: each seed's mean for every member and the combination, then the out-of-domain
    targets of the combination (against NNLP's mean over its recorded seeds)."""
    import numpy as np

    from latency_report_protocol import below_nnlp_target, family_targets, held_out_mapes

    splits, seeds = complete_seeds(snapshot, scores)
    if not seeds:
        return []
    lines = [f"| **mean over the {len(splits)} held-out families** | seed {s} | "
             + " | ".join(f"**{m:.3f}**" for m in np.mean([scores[split, s] for split in splits], axis=0)) + " |"
             for s in seeds]
    combined = {split.removeprefix("ood:"): {s: {"overall": {"mape": scores[split, s][-1]}} for s in seeds}
                for split in splits}
    lines += ["", f"Targets for the geometric mean of {' and '.join(members)} (seeds {', '.join(map(str, seeds))}):", ""]
    nnlp = {}
    for r in snapshot:
        if r["method"] == "nnlp" and r["split"] in splits:
            nnlp.setdefault(r["split"].removeprefix("ood:"), {})[r["seed"]] = as_run(r)
    if set(nnlp) == set(combined):
        lines.append("- " + below_nnlp_target(float(np.mean(list(held_out_mapes(combined).values()))),
                                              float(np.mean(list(held_out_mapes(nnlp).values())))))
    return lines + [f"- {line}" for line in family_targets({}, combined)]


def families(dataset: str, measured_before: str | None) -> str:
    """Every family held out in turn on one snapshot: each variant's MAPE per held-out family,
    the out-of-domain targets (against NNLP, per family, modern families in-domain) and the
    kinds of kernel carrying the worst families' error, from the recorded runs."""
    import numpy as np

    from latency_report_protocol import below_nnlp_target, family_targets, held_out_mapes, mean_std, ood_seed_means

    rows = snapshot_rows(dataset, measured_before)

    variants = sorted({configuration_label(r) for r in rows}, key=lambda v: (not v.startswith("shipped + prior"), v))
    ood = {v: {} for v in variants}
    in_domain = {v: {} for v in variants}
    for r in rows:
        if r["split"].startswith("ood:"):
            ood[configuration_label(r)].setdefault(r["split"].removeprefix("ood:"), {})[r["seed"]] = as_run(r)
        elif r["split"] == "in-domain":
            in_domain[configuration_label(r)][r["seed"]] = as_run(r)
    held = {v: held_out_mapes(ood[v]) for v in variants}
    fams = sorted(set().union(*held.values()))
    lines = [f"Recorded runs on `{dataset}`, measured before {measured_before or 'the end'} "
             "(`python benchmarks/cost_prior_runs.py families ...`). Held-out test MAPE, mean over the seeds run "
             "(seeds in brackets).", "",
             "| held out | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    def spread(runs: dict) -> str:
        return f"{mean_std([r['overall']['mape'] for r in runs.values()])} ({len(runs)})" if runs else ""
    for f in fams:
        lines.append(f"| {f} | " + " | ".join(spread(ood[v].get(f, {})) for v in variants) + " |")
    complete = [v for v in variants if held[v] and set(held[v]) == set(fams)]
    lines.append("| **mean** | " + " | ".join(f"**{np.mean(list(held[v].values())):.3f}**" if v in complete else
                                            "(incomplete)" for v in variants) + " |")

    def per_seed_means(v: str) -> str:
        # Only seeds every family was held out with: the spread of the headline number itself.
        seeds = sorted(set.intersection(*(set(ood[v][f]) for f in fams))) if v in complete else []
        means = ood_seed_means({f: {s: ood[v][f][s] for s in seeds} for f in fams}, "mape") if seeds else []
        return ", ".join(f"{m:.3f} (seed {s})" for s, m in zip(seeds, means)) + (
            f"; {mean_std(means)}" if len(means) > 1 else "")
    lines.append("| mean per seed | " + " | ".join(per_seed_means(v) for v in variants) + " |")
    lines.append("| in-domain (all families) | " + " | ".join(spread(in_domain[v]) for v in variants) + " |")
    judged, baseline = variants[0], "nnlp"
    lines += ["", f"Targets for **{judged}**:", ""]
    if judged in complete and baseline in complete:
        lines.append("- " + below_nnlp_target(np.mean(list(held[judged].values())),
                                              np.mean(list(held[baseline].values()))))
    lines += [f"- {line}" for line in family_targets(in_domain[judged], ood[judged] if judged in complete else {})]
    lines += kernel_kind_lines(ood[judged], judged)
    baseline_mean = np.mean(list(held[baseline].values())) if baseline in complete else None
    return "\n".join(lines + chosen_on_other_families(ood, [v for v in complete if v != baseline], fams,
                                                      baseline_mean))


def kernel_kind_lines(runs_by_family: dict, configuration: str) -> list[str]:
    """The table of the kernel kinds carrying the worst held-out families' error."""
    from latency_report_protocol import worst_family_kernel_errors

    worst = worst_family_kernel_errors(runs_by_family)
    if not worst:
        return []
    lines = ["", f"Kinds of kernel carrying the worst held-out families' error, {configuration} (pooled over seeds):",
             "", "| held out | kernel kind | kernels | measured ms | predicted ms | predicted / measured "
             "| share of error |", "|---|---|---|---|---|---|---|"]
    for family, kinds_ in worst.items():
        lines += [f"| {family} | {k['kind']} | {k['kernels']} | {k['measured_ms']:.1f} | {k['predicted_ms']:.1f} | "
                  f"{k['predicted_ms'] / k['measured_ms']:.2f} | {k['error_share']:.0%} |" for k in kinds_]
    return lines


def choose_on_other_families(ood: dict, candidates: list[str], seeds: list[int]) -> dict[str, str]:
    """For each held-out family, the candidate configuration with the lowest held-out MAPE averaged
    over the *other* families (and `seeds`): how a configuration meant for networks unlike any in
    training is chosen without looking at the family it is then tested on. Validation cannot make
    this choice: it is drawn from the training families, so it rewards what fits them."""
    import numpy as np

    fams = sorted(ood[candidates[0]])
    mape = {v: {f: np.mean([ood[v][f][s]["overall"]["mape"] for s in seeds]) for f in fams} for v in candidates}
    return {f: min(candidates, key=lambda v: np.mean([mape[v][g] for g in fams if g != f])) for f in fams}


def chosen_on_other_families(ood: dict, candidates: list[str], fams: list[str],
                             baseline_mean: float | None = None) -> list[str]:
    """The report's lines for choose_on_other_families among the candidates held out with the same
    two or more seeds on every family (a one-seed variant would win or lose on its seed's luck)."""
    import numpy as np

    from latency_report_protocol import below_nnlp_target, family_targets, mean_std, ood_seed_means

    seeds_of = {v: set.intersection(*(set(ood[v][f]) for f in fams)) for v in candidates}
    candidates = [v for v in candidates if len(seeds_of[v]) >= 2]
    seeds = sorted(set.intersection(*(seeds_of[v] for v in candidates))) if candidates else []
    if len(candidates) < 2 or len(seeds) < 2:
        return []
    chosen = choose_on_other_families(ood, candidates, seeds)
    runs = {f: {s: ood[chosen[f]][f][s] for s in seeds} for f in fams}
    means = ood_seed_means(runs, "mape")
    lines = ["", f"Chosen for each held-out family on the other {len(fams) - 1} families' held-out MAPE (seeds "
             f"{', '.join(map(str, seeds))}), among: {'; '.join(candidates)}.", "",
             "| held out | chosen | held-out test MAPE |", "|---|---|---|"]
    lines += [f"| {f} | {chosen[f]} | {mean_std([r['overall']['mape'] for r in runs[f].values()])} |" for f in fams]
    lines += [f"| **mean** | | **{np.mean(means):.3f}** |",
              f"| mean per seed | | {', '.join(f'{m:.3f} (seed {s})' for s, m in zip(seeds, means))}; "
              f"{mean_std(means)} |", "", "Targets for the configuration chosen this way:", ""]
    if baseline_mean is not None:
        lines.append("- " + below_nnlp_target(float(np.mean(means)), baseline_mean))
    lines += [f"- {line}" for line in family_targets({}, runs)]
    return lines + kernel_kind_lines(runs, "as chosen")


def kinds(top: int = 4) -> str:
    """For each recorded held-out run that kept its kernel times, the kinds of kernel carrying its error."""
    from nar_tvm.kernel_errors import largest_kernel_errors

    lines = ["| dataset | measured before | held out | method | attention | seed | test MAPE | kernel kind | kernels "
             "| measured ms | predicted ms | predicted / measured | share of error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recorded():
        for k in largest_kernel_errors(r.get("kernel_kinds") or {})[:top]:
            lines.append(f"| {r['dataset']} | {r['measured_before'] or 'all'} | {r['split'].removeprefix('ood:')} | "
                         f"{r['method']} | {r['attention']} | "
                         f"{r['seed']} | {r['test_mape']:.3f} | {k['kind']} | {k['kernels']} | {k['measured_ms']:.1f} | "
                         f"{k['predicted_ms']:.1f} | {k['predicted_ms'] / k['measured_ms']:.2f} | {k['error_share']:.0%} |")
    return "\n".join(lines)


VARIANTS = {"prior": ("shipped", True), "base": ("shipped", False), "nnlp": ("nnlp", False)}


def expand_splits(splits: list[str], data: Path, measured_before: str | None) -> list[str]:
    """The splits, checked against the data; `ood:all` stands for every family held out in turn."""
    from nar_tvm.dataset import load_samples

    families = sorted({s.family for s in load_samples(data, measured_before=measured_before)})
    out = []
    for split in splits:
        if split == "ood:all":
            out += [f"ood:{f}" for f in families]
        elif split in ("in-domain", "size") or split.removeprefix("ood:") in families:
            out.append(split)
        else:
            raise ValueError(f"split {split!r}: use in-domain, size, ood:all or ood:<family> of {families}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", help="in-domain, ood:<family> or size; 'batch' for the --splits x --variants x "
                        "--seeds runs in parallel; 'table' to print the recorded runs, 'kinds' the kernel kinds "
                        "carrying each recorded held-out run's error, 'families' every family held out on "
                        "--dataset as of --measured-before, with the targets; 'ensemble' the geometric mean of the two best "
                        "configurations' predictions (ENSEMBLE) where both ran with per-model predictions")
    parser.add_argument("variant", nargs="?", choices=list(VARIANTS),
                        help="the shipped recipe with or without the cost prior, or the NNLP baseline")
    parser.add_argument("seed", nargs="?", type=int, default=0)
    parser.add_argument("--save", help="also write the trained checkpoint here")
    parser.add_argument("--attention", choices=["softmax", "sigmoid-adjacency"], default="softmax")
    parser.add_argument("--dataset", type=Path, default=DATA, help=f"store to train on (default {DATA.relative_to(REPO)})")
    parser.add_argument("--transcendentals", action="store_true",
                        help="the prior also prices each node's transcendental evaluations (exp, erf, tanh, sigmoid)")
    parser.add_argument("--input-shapes", action="store_true",
                        help="tokens also carry each node's first input shape (a conv's input channels: "
                             "untuned 1x1 convolutions slow down ~5x past ~40 of them)")
    parser.add_argument("--layers", type=int, help="encoder blocks (default: the recipe's); 0 prices each kernel from "
                        "its own token alone, without its neighbours")
    parser.add_argument("--measured-before", metavar="ISO_TIME",
                        help="train and test on what the store held at this time (a profiler may still be adding)")
    parser.add_argument("--device", default="cpu", help="torch device to train on (cuda runs are not bit-reproducible)")
    batch_args = parser.add_argument_group("batch")
    batch_args.add_argument("--splits", nargs="+", default=["in-domain"], help="'ood:all' holds out each family")
    batch_args.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["prior"])
    batch_args.add_argument("--seeds", nargs="+", type=int, default=[0])
    batch_args.add_argument("--jobs", type=int, default=1, help="worker processes")
    batch_args.add_argument("--threads", type=int, default=1,
                            help="torch threads per worker (jobs x threads should not exceed the cores)")
    batch_args.add_argument("--deadline-min", type=float, help="start no run after this many minutes")
    batch_args.add_argument("--with-predictions", action="store_true",
                            help="also rerun recorded runs whose rows lack per-model predictions (for 'ensemble')")
    args = parser.parse_args(argv)
    if args.split in ("table", "kinds"):
        print(table() if args.split == "table" else kinds())
        return 0
    if args.split in ("families", "ensemble"):
        try:
            print((families if args.split == "families" else ensemble)(args.dataset.name, args.measured_before))
        except ValueError as exc:
            parser.error(str(exc))
        return 0
    variants = args.variants if args.split == "batch" else [args.variant]
    if None in variants:
        parser.error("say prior, base or nnlp")
    if args.transcendentals and variants != ["prior"]:
        parser.error("--transcendentals prices them in the cost prior: it needs 'prior' alone")
    if args.input_shapes and "nnlp" in variants:
        parser.error("--input-shapes is NAR-Former V2's tokenizer option: not with nnlp")
    if args.attention != "softmax" and "nnlp" in variants:
        parser.error("--attention is NAR-Former V2's: not with nnlp")
    if args.layers is not None and ("nnlp" in variants or args.layers < 0):
        parser.error("--layers is a count (>= 0) of NAR-Former V2's encoder blocks: not with nnlp")

    def spec(split, variant, seed):
        method, prior = VARIANTS[variant]
        return Run(split=split, seed=seed, method=method, prior=prior, attention=args.attention,
                   transcendentals=args.transcendentals, input_shapes=args.input_shapes, layers=args.layers,
                   data=args.dataset,
                   measured_before=args.measured_before, device=args.device)
    if args.split == "batch":
        try:
            splits = expand_splits(args.splits, args.dataset, args.measured_before)
        except ValueError as exc:
            parser.error(str(exc))
        # Seed-major, so that a deadline leaves whole seeds of every variant done (the
        # comparison a report needs) rather than a bit of each.
        specs = [replace(spec(split, variant, seed), parallel_runs=args.jobs, threads=args.threads)
                 for seed in args.seeds for variant in variants for split in splits]
        rows = batch(specs, args.jobs, args.deadline_min, args.with_predictions)
        print(f"{len(rows)} runs recorded of {len(specs)} asked (the others were recorded before or not started)")
        return 0
    row = run(spec(args.split, args.variant, args.seed), args.save)
    record(row)
    print(json.dumps(row))
    return 0


def run_id(row: dict) -> tuple:
    """What a row measured."""
    row = with_defaults(row)
    return (row["dataset"], row["measured_before"], row["split"], row["method"], row["prior"], row["attention"],
            row["transcendentals"], row["input_shapes"], row["layers"], row["seed"])


def record(row: dict) -> None:
    """Append `row`; a rerun of the same run replaces the earlier row (a seed counts once).
    Runs in parallel processes finish at any time: the rewrite holds a lock on the file."""
    import fcntl

    with RUNS.open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        kept = [line for line in fh.read().splitlines() if line.strip() and run_id(json.loads(line)) != run_id(row)]
        fh.seek(0)
        fh.truncate()
        fh.write("".join(line + "\n" for line in kept + [json.dumps(row)]))


if __name__ == "__main__":
    sys.exit(main())
