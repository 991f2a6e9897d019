"""Writing up benchmarks/latency_report.py: the markdown report, its raw JSON and its plots.

Everything here reads finished results; nothing trains. What the numbers mean (the protocol,
the summaries over seeds, the targets) is latency_report_protocol.py.
"""
from __future__ import annotations

import json
import os
import shlex
from collections import defaultdict
from pathlib import Path

import numpy as np

from nar_tvm.cost_model import relative_error

from latency_report_protocol import mean_std, ood_seed_means, pct, worst_family_kernel_errors

# The in-domain and out-of-domain scatter plots show these, then any other configuration
# the report singles out (NAR-Former V2's best, the shipped one).
MAIN_NAMES = ["Linear (FLOPs + mem)", "GBT (xgboost)", "NNLP (GraphSAGE)", "Transformer (plain)", "NAR-Former V2"]


def pinning() -> str:
    """The taskset prefix that reproduces this run's CPU affinity ('' when unpinned)."""
    cores = sorted(os.sched_getaffinity(0))
    return "" if len(cores) == os.cpu_count() else f"taskset -c {','.join(map(str, cores))} "


def command(argv: list[str]) -> str:
    """The command line that regenerates the report, as the report states it."""
    return (f"OMP_NUM_THREADS=1 {pinning()}python benchmarks/latency_report.py"
            + "".join(f" {shlex.quote(a)}" for a in argv))


def shipped_lines(shipped, checkpoint: str) -> list[str]:
    ship, history, predictor = shipped.method, shipped.history, shipped.predictor
    return [
        f"`{Path(checkpoint).name}`: {ship.name}, {shipped.level}-level graphs, trained on the in-domain train split "
        f"of seed {shipped.seed} (the seed with the best validation MAPE), lr {shipped.lr:g}, best epoch "
        f"{history.best_epoch} of {len(history.epochs)}, validation MAPE {history.best_val_mape:.4f}, "
        f"{shipped.size_mb:.2f} MiB",
        f"platform `{predictor.platform.get('platform_id')}`: {predictor.platform.get('cpu')} "
        f"({predictor.platform.get('mcpu')}), {predictor.platform.get('threads')} thread, TVM {predictor.platform.get('tvm')}",
        f"loads with `nar_tvm.cost_model.load_checkpoint`; its test-split numbers are the {ship.name} row, "
        f"seed {shipped.seed}",
    ]


def write_plots(out: Path, in_domain: dict, ood: dict, featured: list[str], nar_name: str, n_seeds: int,
                level: str) -> dict[str, str]:
    """The PNGs beside the report; returns their file names by role."""
    stem = out.stem
    plots = {"scatter_in": f"{stem}_scatter_in_domain.png", "ape": f"{stem}_ape_by_family.png"}
    main_names = MAIN_NAMES + [n for n in dict.fromkeys(featured) if n not in MAIN_NAMES]
    plot_scatter(in_domain, main_names,
                 out.parent / plots["scatter_in"], f"in-domain test, all {n_seeds} seeds, {level}-level graphs")
    if ood:
        plots["scatter_ood"] = f"{stem}_scatter_ood.png"
        flat = {n: {(f, s): r for f, runs in by_fam.items() for s, r in runs.items()} for n, by_fam in ood.items()}
        plot_scatter(flat, [n for n in main_names if n in flat], out.parent / plots["scatter_ood"],
                     "out-of-domain: each family predicted by a model that never saw it")
    plot_ape(in_domain[nar_name], ood.get(nar_name), nar_name, out.parent / plots["ape"])
    return plots


def plot_scatter(results, names, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted({f for n in names for run in results[n].values() for f in run["family"]})
    colours = {f: plt.cm.tab10(i % 10) for i, f in enumerate(fams)}
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        runs = results[name].values()
        true = np.concatenate([r["true"] for r in runs])
        pred = np.concatenate([r["pred"] for r in runs])
        fam = sum((r["family"] for r in runs), [])
        lo, hi = min(true.min(), pred.min()) / 1.3, max(true.max(), pred.max()) * 1.3
        ax.fill_between([lo, hi], [lo / 1.1, hi / 1.1], [lo * 1.1, hi * 1.1], color="0.9", label="±10%")
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
        for f in fams:
            idx = [i for i, x in enumerate(fam) if x == f]
            if idx:
                ax.scatter(true[idx], pred[idx], s=7, color=colours[f], label=f)
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (ms)",
               ylabel="predicted (ms)", title=f"{name}\nMAPE {relative_error(pred, true).mean():.3f}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ape(in_domain_runs, ood_runs, name: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("in-domain test (all seeds)", list(in_domain_runs.values()))]
    if ood_runs:
        panels.append(("out-of-domain: family held out (all seeds)",
                       [run for runs in ood_runs.values() for run in runs.values()]))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.2), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, panels):
        ape = defaultdict(list)
        for r in runs:
            for p, t, f in zip(r["pred"], r["true"], r["family"]):
                ape[f].append(100 * abs(p - t) / t)
        fams = sorted(ape)
        ax.boxplot([ape[f] for f in fams], showfliers=True, flierprops={"markersize": 2})
        ax.set_xticks(range(1, len(fams) + 1), fams, rotation=40, ha="right", fontsize=8)
        ax.set(yscale="log", ylabel="absolute percentage error (%)", title=f"{name}: {title}")
        ax.axhline(10, color="r", lw=0.7, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, ctx: dict) -> None:
    L = []
    w = L.append
    w("# Latency prediction report: NAR-Former V2 vs baselines\n")
    w("Generated by one command (from the repository root):\n")
    w(f"```\n{ctx['command']}\n```\n")
    w(f"Run {ctx['started']} to {ctx['finished']} UTC; {ctx['total_wall_min']:.1f} min wall, "
      f"{ctx['total_cpu_min']:.1f} min CPU in all ({ctx['jobs']} training process(es) in parallel, one torch "
      "thread each). The cores were shared with other jobs during the run, so wall times exceed CPU times; "
      "CPU times are the comparable numbers.\n")
    if ctx.get("reused"):
        w(f"{ctx['reused']} training runs were reused from the run cache `{ctx['runs_cache']}`: an earlier "
          "invocation trained them on the same snapshot with the same settings (the cache key covers both). "
          "The times above are this invocation's; the per-run training times in the tables are the runs' own.\n")

    ds = ctx["dataset"]
    w("## Dataset\n")
    taken = (f"what it held before {ds['measured_before']} UTC" if ds.get("measured_before")
             else "taken at the start of the run")
    w(f"`{ds['path']}`, a snapshot of **{ds['n']} measured models** ({taken}), "
      f"platform `{ds['platform_id']}`: {ds['platform']['cpu']} (`{ds['platform']['mcpu']}`), "
      f"{ds['platform']['threads']} thread, TVM {ds['platform']['tvm']}, untuned default pipeline. "
      + ("Each model's label is its fastest measured run (`--labels min`: the first measurement or a "
         "re-measurement).\n" if ds.get("labels") == "min" else "Each model's label is its first measurement.\n"))
    w("| family | models | min ms | median ms | max ms |\n|---|---:|---:|---:|---:|")
    for f, st in ds["families"].items():
        w(f"| {f} | {st['n']} | {st['min']:.2f} | {st['median']:.2f} | {st['max']:.2f} |")
    w("")
    nf = ctx["noise"]
    w(f"**Noise floor: {100 * nf['value']:.2f}%** ({nf['label']})."
      + (" The labels here are the faster of a model's runs, which drops most interference hits, so their "
         "own noise is lower than this single-run floor; it cannot be measured without a third run.\n"
         if ds.get("labels") == "min" else "\n"))

    w("## Protocol (exactly what ran)\n")
    for line in ctx["protocol"]:
        w(f"* {line}")
    w("")

    w(f"## Graph level: op vs fused (NAR-Former V2, in-domain, seeds {list(next(iter(ctx['level_runs'].values())))})\n")
    w("| level | val MAPE | test MAPE | test Acc(10%) | train s (CPU) |\n|---|---:|---:|---:|---:|")
    for level, runs in ctx["level_runs"].items():
        r = list(runs.values())
        w(f"| {level} | {mean_std([x['val_mape'] for x in r])} | {mean_std([x['overall']['mape'] for x in r])} | "
          f"{pct([x['overall']['acc@10%'] for x in r])}% | {mean_std([x['train_cpu_s'] for x in r])} |")
    if ctx["level_given"]:
        w(f"\n**Not compared in this run**: the level was given on the command line (`--level {ctx['level']}`); "
          "the other level was not trained.\n")
    else:
        w(f"\nChosen on validation MAPE: **{ctx['level']}** level "
          "(used for every learned method below and for the run's best checkpoint).\n")

    if ctx["lr_search"]:
        w("## Learning-rate search (first in-domain seed, validation MAPE)\n")
        lrs = sorted({lr for scores in ctx["lr_search"].values() for lr in scores})
        w("| method | level | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |")
        w("|---|---|" + "---:|" * (len(lrs) + 1))
        for (name, level), scores in ctx["lr_search"].items():
            w(f"| {name} | {level} | " + " | ".join(f"{scores[lr]:.4f}" if lr in scores else "-" for lr in lrs)
              + f" | {ctx['chosen_lr'][name, level]:g} |")
        w("")

    w("## In-domain (random 80/10/10 split within each family)\n")
    w(f"Test metrics, mean ± std over {len(ctx['seeds'])} seeds (split and initialisation). MAPE is a fraction, "
      "RMSE in ms, Acc(δ) the share of test models within δ relative error. Noise floor "
      f"{100 * nf['value']:.2f}% ({nf['short']}).\n")
    w("| method | seeds | MAPE | RMSE (ms) | Acc(5%) | Acc(10%) | val MAPE | train s (CPU) | train s (wall) "
      "| predict ms/model (CPU) | predict ms/model (wall) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    acc = (f"*{100 * nf['acc@5%']:.1f}%* | *{100 * nf['acc@10%']:.1f}%*" if "acc@10%" in nf else " | ")
    w(f"| *noise floor ({nf['short']})* | | *{nf['value']:.3f}* | | {acc} | | | | | |")
    for name, runs in ctx["in_domain"].items():
        r = list(runs.values())
        w(f"| {name} | {len(r)} | {mean_std([x['overall']['mape'] for x in r])} | "
          f"{mean_std([x['overall']['rmse'] for x in r])} | "
          f"{pct([x['overall']['acc@5%'] for x in r])}% | {pct([x['overall']['acc@10%'] for x in r])}% | "
          f"{mean_std([x['val_mape'] for x in r])} | {mean_std([x['train_cpu_s'] for x in r])} | "
          f"{mean_std([x['train_wall_s'] for x in r])} | {mean_std([1e3 * x['predict_cpu_s'] / x['n_test'] for x in r])} | "
          f"{mean_std([1e3 * x['predict_wall_s'] / x['n_test'] for x in r])} |")
    w("")
    fams = sorted({f for runs in ctx["in_domain"].values() for run in runs.values() for f in run["families"]})
    for title, metric, fmt in (("MAPE per family (mean ± std over seeds)", "mape", mean_std),
                               ("Acc(10%) per family (%, mean ± std over seeds)", "acc@10%", pct)):
        w(f"### In-domain test {title}\n")
        w("| method | " + " | ".join(fams) + " |")
        w("|---|" + "---:|" * len(fams))
        for name, runs in ctx["in_domain"].items():
            cells = [fmt([run["families"][f][metric] for run in runs.values() if f in run["families"]]) for f in fams]
            w(f"| {name} | " + " | ".join(cells) + " |")
        w("")
    w(f"![predicted vs measured, in-domain]({ctx['plots']['scatter_in']})\n")

    if ctx["ood"]:
        w("## Out-of-domain (leave one family out)\n")
        w("Each family in turn is the test set; the model trains on the others (10% of them for validation). "
          "The summary averages each seed's metrics over the held-out families (each family counts once), then "
          "gives mean ± std over seeds; the two configurations the target is judged on have more seeds per family "
          "than the others when the command line asks for it (`--target-ood-seeds`).\n")
        w("| method | seeds per family | mean MAPE | mean RMSE (ms) | mean Acc(5%) | mean Acc(10%) |\n"
          "|---|---:|---:|---:|---:|---:|")
        for name, by_fam in ctx["ood"].items():
            n_seeds = len({seed for runs in by_fam.values() for seed in runs})
            w(f"| {name} | {n_seeds} | {mean_std(ood_seed_means(by_fam, 'mape'))} | {mean_std(ood_seed_means(by_fam, 'rmse'))} | "
              f"{pct(ood_seed_means(by_fam, 'acc@5%'))}% | {pct(ood_seed_means(by_fam, 'acc@10%'))}% |")
        w("")
        ood_fams = sorted({f for by_fam in ctx["ood"].values() for f in by_fam})
        for metric, label, fmt in (("mape", "MAPE", mean_std), ("acc@10%", "Acc(10%) (%)", pct)):
            w(f"### Held-out family {label} (mean ± std over seeds)\n")
            w("| method | " + " | ".join(ood_fams) + " |")
            w("|---|" + "---:|" * len(ood_fams))
            for name, by_fam in ctx["ood"].items():
                w(f"| {name} | " + " | ".join(
                    fmt([run["overall"][metric] for run in by_fam[f].values()]) if f in by_fam else "-"
                    for f in ood_fams) + " |")
            w("")
        worst = worst_family_kernel_errors(ctx["ood"].get(ctx.get("kernel_error_method"), {}))
        if worst:
            w(f"### Where the worst held-out families' error sits ({ctx['kernel_error_method']})\n")
            w("Measured against predicted time of each kind of fused kernel (its anchor op, the kind of "
              "convolution, the costly element-wise functions fused into it), summed over the family's models "
              "and seeds; share = the kind's absolute error over the family's summed absolute kernel error.\n")
            w("| held-out family | kernel kind | kernels | measured ms | predicted ms | predicted / measured "
              "| share of error |\n|---|---|---:|---:|---:|---:|---:|")
            for family, rows in worst.items():
                for r in rows:
                    ratio = r["predicted_ms"] / r["measured_ms"] if r["measured_ms"] else float("nan")
                    w(f"| {family} | {r['kind']} | {r['kernels']} | {r['measured_ms']:.1f} | {r['predicted_ms']:.1f} "
                      f"| {ratio:.2f} | {r['error_share']:.0%} |")
            w("")
        w(f"![predicted vs measured, out-of-domain]({ctx['plots']['scatter_ood']})\n")
    w(f"![APE per family]({ctx['plots']['ape']})\n")

    w("## Targets\n")
    for line in ctx["targets"]:
        w(f"* {line}")
    w("")

    w("## Best checkpoint of this run\n")
    for line in ctx["shipped"]:
        w(f"* {line}")
    w("")

    sp = ctx.get("speed")
    if sp:
        w("## Speed\n")
        w(f"Measured in this run, one thread, with this run's best checkpoint ({sp['level']}-level graphs). "
          "Prediction end to end = `nar_tvm.api.predict(model.onnx)`: load the ONNX file, import it into "
          "Relax, extract the OpGraph, tokenize, forward (median of 3, after one warm-up call). "
          "Compile-and-measure = load the same ONNX, `tvm.compile` (untuned) and time it with the dataset's "
          "protocol (1 warm-up, 5 repeats of >= 40 ms) on this core.\n")
        w("| model | nodes | predicted ms | dataset ms | predict s (wall / CPU) | compile+measure s (wall / CPU) | ratio (CPU) |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for m in sp["models"]:
            w(f"| {m['name']} | {m['nodes']} | {m['predicted_ms']:.2f} | {m['dataset_ms']:.2f} | "
              f"{m['predict_wall_s']:.3f} / {m['predict_cpu_s']:.3f} | {m['compile_measure_wall_s']:.2f} / "
              f"{m['compile_measure_cpu_s']:.2f} | {m['compile_measure_cpu_s'] / m['predict_cpu_s']:.0f}x |")
        tp = sp["throughput"]
        per = {k: v["cpu_s"] / tp["graphs"] for k, v in tp.items() if isinstance(v, dict)}
        cm = np.mean([m["compile_measure_cpu_s"] for m in sp["models"]])
        e2e = np.mean([m["predict_cpu_s"] for m in sp["models"]])
        w("")
        w(f"Batched, {tp['graphs']} dataset graphs (mean {tp['mean_nodes']:.0f} nodes), CPU time:\n")
        w("| path | total s | ms / graph | graphs / s |\n|---|---:|---:|---:|")
        for k, label in (("batched_end_to_end", "tokenize + batched forward (`predictor.predict`)"),
                         ("tokenize", "tokenize only"), ("batched_forward", "batched forward only"),
                         ("one_at_a_time_forward", "forward one graph at a time")):
            w(f"| {label} | {tp[k]['cpu_s']:.2f} | {1e3 * per[k]:.2f} | {1 / per[k]:.0f} |")
        w("")
        cm_wall = np.mean([m["compile_measure_wall_s"] for m in sp["models"]])
        e2e_wall = np.mean([m["predict_wall_s"] for m in sp["models"]])
        w(f"Ratios (CPU time, this run): one end-to-end prediction from ONNX is **{cm / e2e:.0f}x** faster than "
          f"compiling and measuring the model; a graph in the batched path costs {1e3 * per['batched_end_to_end']:.2f} ms, "
          f"**{cm / per['batched_end_to_end']:.0f}x** less than compile-and-measure; batched forward is "
          f"{per['one_at_a_time_forward'] / per['batched_forward']:.1f}x one-graph-at-a-time forward. "
          f"The dataset's own median compile time is {ctx['dataset']['median_compile_s']:.2f} s per model "
          f"(measured on the profiling core). In wall time on the shared core the end-to-end ratio is "
          f"{cm_wall / e2e_wall:.0f}x.\n")

    w("## Files\n")
    w(f"* raw results: `{ctx['json_name']}`")
    w("* plots: " + ", ".join(f"`{p}`" for p in ctx["plots"].values()))
    w(f"* checkpoint: `{ctx['checkpoint_name']}`")
    if ctx.get("notes"):
        w("\n" + ctx["notes"].strip())
    path.write_text("\n".join(L) + "\n")


def write_json(path: Path, ctx: dict, chosen_lr: dict, log_lines: list[str]) -> None:
    """The report's numbers without the per-model predictions (those are in the plots)."""
    raw = {k: ctx[k] for k in ("command", "started", "finished", "dataset", "noise", "level", "seeds", "ood_seeds",
                               "speed", "targets")}
    raw["chosen_lr"] = {f"{n} [{lv}]": lr for (n, lv), lr in chosen_lr.items()}
    strip = lambda run: {k: v for k, v in run.items() if k not in ("pred", "true", "family")}  # noqa: E731
    raw["level_runs"] = {lv: {s: strip(r) for s, r in runs.items()} for lv, runs in ctx["level_runs"].items()}
    raw["in_domain"] = {n: {s: strip(r) for s, r in runs.items()} for n, runs in ctx["in_domain"].items()}
    raw["ood"] = {n: {f: {s: strip(r) for s, r in runs.items()} for f, runs in by_fam.items()}
                  for n, by_fam in ctx["ood"].items()}
    raw["log"] = log_lines
    path.write_text(json.dumps(raw, indent=1, default=str))
