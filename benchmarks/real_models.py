"""Published architectures at the sizes people deploy them: how far the predictor extrapolates.

The zoo keeps its models small so that untuned TVM measures each in seconds; the largest graph
the shipped predictor trained on has 0.69 GFLOPs. ResNet-50 at 224 px has 8.2, BERT-base on
128 tokens 22. This benchmark measures such models on this machine and sets the shipped
predictor's answers beside the measurements, uncalibrated and calibrated on the ten zoo shots
`nar-tvm calibrate` would measure, so that the error can be read against the graph's size
relative to the training range (`size_factor`, the "extrapolated" flag of `nar-tvm predict`).

Stages (each resumable):
  profile  build every model of MODELS from its Hugging Face `transformers` definition (random
           weights, nothing downloaded), export it to ONNX and compile and measure it with the
           profiler, after the machine speed probe and the calibration shots, into one store
  report   predictions against measurements -> benchmarks/real_models.md and .json

    pip install -e '.[realmodels]'    # transformers
    taskset -c 0 python benchmarks/real_models.py profile --out benchmarks/data/real-models-<cpu>-<n> --cpu-affinity 1
    python benchmarks/real_models.py report --store benchmarks/data/real-models-<cpu>-<n>

Untuned TVM runs a large model for seconds to a minute, so each is timed 3 times after one
warm-up (the calibration shots too, so that one protocol holds for the whole store).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "benchmarks" / "real_models.md"
PROTOCOL = {"warmup": 1, "repeat": 3, "min_repeat_ms": 40}
SHOTS = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- models
# (architecture, size, input kind): image side in pixels, or tokens for a text encoder.
MODELS = [
    ("resnet50", 64, "image"), ("resnet50", 112, "image"), ("resnet50", 160, "image"), ("resnet50", 224, "image"),
    ("bert-base", 16, "tokens"), ("bert-base", 32, "tokens"), ("bert-base", 64, "tokens"), ("bert-base", 128, "tokens"),
    ("vit-base-16", 112, "image"), ("vit-base-16", 224, "image"),
    ("convnext-tiny", 112, "image"), ("convnext-tiny", 224, "image"),
    ("swin-tiny", 224, "image"),
    ("mobilenetv2-1.0", 224, "image"), ("regnety-4gf", 224, "image"),
    ("mobilevit-s", 256, "image"),
    ("distilbert", 128, "tokens"), ("gpt2", 64, "tokens"),
]


def build(arch: str, size: int, kind: str):
    """(module returning the last hidden state, example input) of one published architecture."""
    import torch
    import transformers as T

    configs = {
        "resnet50": (T.ResNetConfig, T.ResNetModel, {}),
        "bert-base": (T.BertConfig, T.BertModel, {}),
        "vit-base-16": (T.ViTConfig, T.ViTModel, {"image_size": size}),
        "convnext-tiny": (T.ConvNextConfig, T.ConvNextModel, {}),
        "swin-tiny": (T.SwinConfig, T.SwinModel, {"image_size": size}),
        "mobilenetv2-1.0": (T.MobileNetV2Config, T.MobileNetV2Model, {"image_size": size}),
        "regnety-4gf": (T.RegNetConfig, T.RegNetModel, {}),
        "mobilevit-s": (T.MobileViTConfig, T.MobileViTModel, {"image_size": size}),
        "distilbert": (T.DistilBertConfig, T.DistilBertModel, {}),
        "gpt2": (T.GPT2Config, T.GPT2Model, {}),
    }
    config_cls, model_cls, overrides = configs[arch]
    config = config_cls(**overrides)
    config._attn_implementation = "eager"  # the attention people export; no fused SDPA kernel
    torch.manual_seed(0)
    model = model_cls(config).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).last_hidden_state

    if kind == "tokens":
        example = torch.randint(0, config.vocab_size, (1, size), generator=torch.Generator().manual_seed(0))
    else:
        example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return LastHiddenState(model).eval(), example


def model_name(arch: str, size: int, kind: str) -> str:
    return f"{arch}-{size}{'px' if kind == 'image' else 'tok'}"


def real_job(arch: str, size: int, kind: str):
    from nar_tvm.profiler import Job, onnx_bytes_of

    module, example = build(arch, size, kind)
    name = model_name(arch, size, kind)
    return Job(key=f"real:{name}", name=name, family=arch, seed=None,
               params={"architecture": arch, kind: size, "source": "transformers"},
               onnx_bytes=onnx_bytes_of(module, example))


# --------------------------------------------------------------------- profile
def shot_specs(predictor) -> list[tuple[str, int]]:
    from nar_tvm import zoo
    from nar_tvm.calibrate import shot_models

    return shot_models(SHOTS, predictor.provenance.get("families") or zoo.FAMILIES)


def run_profile(args) -> None:
    from nar_tvm.api import DEFAULT_CHECKPOINT
    from nar_tvm.cost_model import load_checkpoint
    from nar_tvm.dataset import DatasetStore
    from nar_tvm.measure import Protocol
    from nar_tvm.platform import PlatformSpec
    from nar_tvm.profiler import Profiler, WorkerConfig, zoo_entry

    predictor = load_checkpoint(DEFAULT_CHECKPOINT)
    spec = PlatformSpec(pipeline=predictor.platform.get("pipeline", "default"),
                        threads=int(predictor.platform.get("threads", 1)))
    affinity = [int(c) for c in args.cpu_affinity.split(",")] if args.cpu_affinity else None
    profiler = Profiler(DatasetStore(args.out, shard_size=100), WorkerConfig(spec, Protocol(**PROTOCOL), affinity),
                        measure_timeout=1800)
    jobs = [zoo_entry(f, s) for f, s in shot_specs(predictor)]
    jobs += [(f"real:{model_name(*m)}", lambda m=m: real_job(*m)) for m in MODELS]
    try:
        counts = profiler.profile(jobs)
    finally:
        profiler.close()
    log(f"{args.out}: {counts}")


# ---------------------------------------------------------------------- report
def predictions(predictor, graphs) -> dict:
    res = predictor.predict(graphs)
    if res.low_ms is None:
        raise SystemExit("the checkpoint carries no interval fit (benchmarks/calibration_report.py intervals "
                         "writes one), so its intervals and size range cannot be reported")
    return {"ms": res.latency_ms, "low": res.low_ms, "high": res.high_ms, "novel": res.novel,
            "size_factor": res.size_factor}


def run_report(args) -> None:
    from nar_tvm.api import DEFAULT_CHECKPOINT
    from nar_tvm.calibrate import calibrated_predictor
    from nar_tvm.cost_model import calibration, load_checkpoint
    from nar_tvm.dataset import DatasetStore
    from nar_tvm.passes.opgraph import OpGraph

    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    predictor = load_checkpoint(checkpoint)
    level = predictor.provenance.get("level", "op")
    records = list(DatasetStore(args.store).records("ok"))
    if not records:
        raise SystemExit(f"{args.store}: no measured models; run the profile stage first")
    shots = [r for r in records if r["job"].startswith("zoo:")]
    order = {model_name(*m): i for i, m in enumerate(MODELS)}  # the script's order; others after, by name
    real = sorted((r for r in records if r["job"].startswith("real:")),
                  key=lambda r: (order.get(r["model"]["name"], len(order)), r["model"]["name"]))
    fit = calibration.fit(predictor, [OpGraph.from_dict(r["graphs"][level]) for r in shots],
                          [r["measurement"]["median_ms"] for r in shots])
    probe = records[0].get("probe")
    calibrated = calibrated_predictor(predictor, fit, probe, records[0]["platform"], str(checkpoint))
    graphs = [OpGraph.from_dict(r["graphs"][level]) for r in real]
    measured = np.array([r["measurement"]["median_ms"] for r in real])
    plain, cal = predictions(predictor, graphs), predictions(calibrated, graphs)
    rows = []
    for i, (r, g) in enumerate(zip(real, graphs)):
        rows.append({
            "model": r["model"]["name"], "gflops": g.flops / 1e9, "size_factor": float(cal["size_factor"][i]),
            "flagged": bool(cal["novel"][i]), "measured_ms": float(measured[i]),
            "cv": float(r["measurement"]["cv"]), "compile_s": float(r["measurement"]["compile_s"]),
            "predicted_ms": float(plain["ms"][i]), "calibrated_ms": float(cal["ms"][i]),
            "calibrated_low_ms": float(cal["low"][i]), "calibrated_high_ms": float(cal["high"][i]),
        })
    fingerprint = records[0]["platform"]
    summary = {
        "store": _shown(Path(args.store)),
        "machine": f"{fingerprint.get('cpu', '?')} (LLVM mcpu {fingerprint.get('mcpu', '?')})",
        "checkpoint": _shown(checkpoint), "measured": min(r["time"] for r in records)[:16], "calibration": {"method": fit.method,
                                                                         "loo_mape": fit.loo_mape[fit.method],
                                                                         "shots": len(shots)},
        "rows": rows,
        "command": regenerate_command(args),
    }
    Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    Path(args.md).write_text(render(summary))
    log(f"wrote {args.md} and {args.json}")


def regenerate_command(args) -> str:
    """The report command that wrote this report, its non-default options included."""
    command = f"python benchmarks/real_models.py report --store {_shown(Path(args.store))}"
    if args.checkpoint:
        command += f" --checkpoint {_shown(Path(args.checkpoint))}"
    for flag, value, default in (("--md", args.md, REPORT), ("--json", args.json, REPORT.with_suffix(".json"))):
        if Path(value).resolve() != default.resolve():
            command += f" {flag} {_shown(Path(value))}"
    return command


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _ratio_stats(rows) -> str:
    if not rows:
        return "—"
    r = np.array([row["measured_ms"] / row["calibrated_ms"] for row in rows])
    inside = np.mean([row["calibrated_low_ms"] <= row["measured_ms"] <= row["calibrated_high_ms"] for row in rows])
    ape = np.abs(1 / r - 1)
    text = (f"{len(rows)} models: MAPE {ape.mean():.3f}, measured / predicted {r.min():.2f} .. {r.max():.2f}, "
            f"90% interval covers {inside:.0%}")
    if len(rows) >= 3:
        from nar_tvm.cost_model.metrics import spearman

        rank = spearman([row["calibrated_ms"] for row in rows], [row["measured_ms"] for row in rows])
        text += f", Spearman {rank:.3f}"
    return text


def render(summary: dict) -> str:
    rows = summary["rows"]
    lines = [
        "# Published architectures at deployment size: predicted against measured",
        "",
        f"Regenerate: `{summary['command']}` "
        "(measure first with the `profile` stage; see the script's docstring).",
        "",
        f"Measured {summary['measured']} UTC on {summary['machine']}, one thread, untuned TVM (the default "
        "pipeline), by the project's profiler (1 warm-up, median of 3 timings), store "
        f"`{summary['store']}` (graphs, fingerprint, machine speed probe). The checkpoint, "
        f"`{summary['checkpoint']}`, predicts for the machine its data came from; the calibrated column fits it to this machine on "
        f"{summary['calibration']['shots']} zoo models measured in the same run "
        f"(`nar-tvm calibrate`'s shots; chosen method `{summary['calibration']['method']}`, "
        f"leave-one-out MAPE {summary['calibration']['loo_mape']:.3f} on the shots).",
        "",
        "`size` is how far the graph lies outside the training graphs' FLOPs and memory-traffic range "
        "(1: inside; 8 means eight times the largest); such graphs are flagged as unlike the training data.",
        "",
        "| model | GFLOPs | size | flagged | measured ms | predicted ms (uncalibrated) | predicted ms (calibrated) | measured / calibrated | calibrated 90% interval | inside |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        inside = r["calibrated_low_ms"] <= r["measured_ms"] <= r["calibrated_high_ms"]
        lines.append(f"| {r['model']} | {r['gflops']:.2f} | {r['size_factor']:.2f} | {'yes' if r['flagged'] else 'no'} | "
                     f"{r['measured_ms']:.1f} | {r['predicted_ms']:.1f} | {r['calibrated_ms']:.1f} | "
                     f"{r['measured_ms'] / r['calibrated_ms']:.2f} | {r['calibrated_low_ms']:.1f} .. "
                     f"{r['calibrated_high_ms']:.1f} | {'yes' if inside else 'no'} |")
    within = [r for r in rows if r["size_factor"] == 1.0]
    beyond = [r for r in rows if r["size_factor"] != 1.0]
    lines += [
        "",
        f"- Inside the training size range: {_ratio_stats(within)}.",
        f"- Outside it: {_ratio_stats(beyond)}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--out", required=True, help="dataset folder (resumed if it exists)")
    p.add_argument("--cpu-affinity", help="cores to pin the measuring process to, e.g. 1")
    p.set_defaults(run=run_profile)
    p = sub.add_parser("report")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint", help="predictor to evaluate (default: the shipped one)")
    p.add_argument("--json", default=str(REPORT.with_suffix(".json")))
    p.add_argument("--md", default=str(REPORT))
    p.set_defaults(run=run_report)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
