"""NAS-Bench-201 on the integration side: the `nar-tvm nasbench` command and whole-network graphs.

The learning (cell tokens, protocols, few-shot latency) is in `nar_tvm.cost_model.nasbench`;
this module parses arguments, prints results, and builds the alternative input to the cell
tokens: the whole NAS-Bench-201 network as the Relax pass sees it (`network_opgraph`), which
the OpGraph latency predictor (`nar_tvm.cost_model.train`) takes like any other model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ACCURACY_CSV = "accuracy.csv.gz"
DEFAULT_LATENCY_CSV = "latency.csv.gz"


def network_opgraph(cell: str, C: int = 16, N: int = 5, num_classes: int = 10, level: str = "op",
                    batch: int = 1):
    """OpGraph of the NAS-Bench-201 network around `cell` (32x32 input): the zoo's module,
    exported to ONNX as the profiler exports it, then extracted by the Relax pass.

    Slow (an ONNX export and a Relax import per cell, about a second or more): meant for
    a few cells or for building an OpGraph dataset once, not for all 15,625 on the fly.
    """
    import onnx
    import torch

    from .api import extract
    from .profiler import onnx_bytes_of
    from .zoo import nasbench201_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # weights do not change the graph; fixed so exports are reproducible
        module = nasbench201_network(cell, C, N, num_classes).eval()
    example = torch.zeros(batch, 3, 32, 32)
    model = onnx.load_from_string(onnx_bytes_of(module, example))
    return extract(model, level=level, name=f"nb201:{cell}")


# ------------------------------------------------------------------------------ CLI
def _mean_std(values) -> str:
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def _data_path(value: str | None, default_name: str) -> str:
    from .cost_model.nb201_space import DEFAULT_DATA_DIR

    return value if value is not None else str(DEFAULT_DATA_DIR / default_name)


def _checkpoint_paths(out: str, seeds: list[int]) -> list[Path]:
    out = Path(out)
    if len(seeds) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-seed{s}{out.suffix}") for s in seeds]


def cmd_nasbench_accuracy(args) -> int:
    from .cost_model.nasbench import AccuracyConfig, CellPredictor, accuracy_protocol, load_table
    from .cost_model.metrics import kendall_tau, spearman

    path = _data_path(args.accuracy_csv, DEFAULT_ACCURACY_CSV)
    if args.action == "evaluate" and args.checkpoint:
        table = load_table(path, [args.eval_label])
        predictor = CellPredictor.load(args.checkpoint)
        pred = predictor.predict(table.cells)
        y = table.column(args.eval_label)
        print(f"{args.checkpoint} (trained on {predictor.label!r}) vs {args.eval_label!r} on {len(table)} "
              f"rows of {path}: Kendall tau {kendall_tau(pred, y):.4f}  Spearman {spearman(pred, y):.4f}")
        return 0

    table = load_table(path, list(dict.fromkeys([args.label, args.eval_label])))
    overrides = {k: getattr(args, k) for k in ("fusion", "ensemble") if getattr(args, k) is not None}
    cfg = AccuracyConfig(epochs=args.epochs, **overrides)
    outs = _checkpoint_paths(args.out, args.seeds) if args.out else [None] * len(args.seeds)
    taus = []
    for seed, out in zip(args.seeds, outs):
        predictor, result = accuracy_protocol(table, args.label, args.eval_label, args.train_size, seed, cfg)
        taus.append(result["kendall_tau"])
        print(f"seed {seed}: train {args.train_size} on {args.label!r}, best epoch {result['best_epoch']} "
              f"(validation tau {result['val_kendall_tau']:.4f}); Kendall tau vs {args.eval_label!r} on all "
              f"{len(table)} rows {result['kendall_tau']:.4f}  Spearman {result['spearman']:.4f}")
        if out is not None:
            predictor.save(out)
            print(f"  saved {out}")
    if len(taus) > 1:
        print(f"Kendall tau over {len(taus)} seeds: {_mean_std(taus)}")
    return 0


def _pretrained_latency_model(args, cells_csv: str, target_device: str | None, target_csv: str | None, seed: int):
    """The multi-device model `--shots` adapts: `--pretrained`, or pretrained here on
    `--pretrain-columns` of `--pretrain-csv` (default: every device column of the target's CSV
    but the target, or of the shipped table when that CSV has no other device)."""
    import numpy as np

    from .cost_model.nasbench import FewShotLatencyModel, LatencyConfig, NasBenchDataError, load_table

    if args.pretrained:
        if args.pretrain_csv or args.pretrain_columns:
            raise NasBenchDataError("--pretrained is a model already pretrained; --pretrain-csv and "
                                    "--pretrain-columns would pretrain another")
        model = FewShotLatencyModel.load(args.pretrained)
        if target_device in model.devices:
            raise NasBenchDataError(f"{args.pretrained}: pretrained on the target device {target_device!r}")
        print(f"pretrained model {args.pretrained}: {len(model.devices)} device(s)", file=sys.stderr)
        return model

    sources = [args.pretrain_csv] if args.pretrain_csv else [target_csv, _data_path(None, DEFAULT_LATENCY_CSV)]
    for pre_path in [p for p in sources if p is not None]:
        pre = load_table(pre_path, args.pretrain_columns, cells_from=cells_csv)
        columns = args.pretrain_columns or [c for c in pre.device_columns() if c != target_device]
        if columns:
            break
    # The target device must stay unseen however the pretraining columns were named.
    if (target_device in columns and target_csv is not None
            and Path(pre_path).resolve() == Path(target_csv).resolve()):
        raise NasBenchDataError(f"--pretrain-columns includes the target device {target_device!r}")
    if not columns:
        raise NasBenchDataError(f"{pre_path}: no pretraining device columns (<device>_ms)"
                                + (f" besides {target_device!r}" if target_device else ""))
    print(f"pretraining on {len(columns)} device(s) x {len(pre)} architectures from {pre_path}", file=sys.stderr)
    return FewShotLatencyModel.pretrain(pre.cells, np.stack([pre.column(c) for c in columns], axis=1), columns,
                                        LatencyConfig(pretrain_steps=args.pretrain_steps), seed=seed)


def _write_cells_csv(path: str, header: list[str], rows) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def cmd_nasbench_shots(args) -> int:
    """Which architectures to measure first on a new device: `design_shots` over every cell."""
    from .cost_model.nasbench import load_table

    cells_csv = _data_path(args.cells_csv, DEFAULT_ACCURACY_CSV)
    table = load_table(cells_csv, [])
    model = _pretrained_latency_model(args, cells_csv, None, None, args.seed)
    learn, _ = model.design_shots(table.cells, args.shots, args.seed)
    if args.save_pretrained:
        model.save(args.save_pretrained)
        print(f"saved the pretrained model to {args.save_pretrained}: adapt with the same one "
              f"(nasbench latency --pretrained {args.save_pretrained}), the shots were designed for it",
              file=sys.stderr)
    rows = [(int(table.arch_index[i]), table.cells[i]) for i in learn]
    if args.out:
        _write_cells_csv(args.out, ["arch_index", "cell"], rows)
        print(f"wrote the {len(rows)} architectures to measure to {args.out}", file=sys.stderr)
    for arch, cell in rows:
        print(f"{arch}\t{cell}")
    return 0


def cmd_nasbench_latency(args) -> int:
    from .cost_model.nasbench import (NasBenchDataError, latency_metrics, load_table, shots_split,
                                      train_latency_predictor)

    if args.shots is not None and args.train_size is not None:
        raise NasBenchDataError("give --shots (adapt a pretrained model) or --train-size (train from "
                                "scratch on the target device), not both")
    if args.predict_out and (args.shots is not None or args.train_size is not None):
        raise NasBenchDataError("--predict-out learns from every measured row of the device; --shots and "
                                "--train-size pick rows to test against, so they do not go with it")
    if args.train_size is not None and args.pretrained:
        raise NasBenchDataError("--train-size trains from scratch on the target; --pretrained is for --shots")
    if args.train_size is not None and args.shot_choice == "design":
        raise NasBenchDataError("--shot-choice design needs a pretrained model's codes (--shots); "
                                "--train-size samples its rows at random")
    cells_csv = _data_path(args.cells_csv, DEFAULT_ACCURACY_CSV)
    args.latency_csv = _data_path(args.latency_csv, DEFAULT_LATENCY_CSV)
    target = load_table(args.latency_csv, [args.device], cells_from=cells_csv)
    y = target.column(args.device)
    model = None
    if args.train_size is None:
        model = _pretrained_latency_model(args, cells_csv, args.device, args.latency_csv, args.seeds[0])

    if args.predict_out:
        # Every measured row teaches; every architecture of the cells table is predicted.
        everything = load_table(cells_csv, [])
        head = model.adapt(target.cells, y)
        pred = model.predict(head, everything.cells)
        how = (f"adapted with its {len(y)} measured rows (pretrained weight {head.mix:g} against the "
               "op-cost model, by leave-one-out)")
        _write_cells_csv(args.predict_out, ["arch_index", "cell", f"predicted_{args.device}"],
                         [(int(a), c, f"{p:.6g}") for a, c, p in zip(everything.arch_index, everything.cells, pred)])
        print(f"{args.device} {how}: wrote {len(pred)} predictions to {args.predict_out}")
        return 0

    n_learn = args.train_size if args.train_size is not None else (args.shots or 10)
    designed = model is not None and args.shot_choice != "random"
    results = []
    for seed in args.seeds:
        if designed:
            learn, test = model.design_shots(target.cells, n_learn, seed)
        else:
            learn, test = shots_split(len(target), n_learn, seed)
        learn_cells = [target.cells[i] for i in learn]
        test_cells = [target.cells[i] for i in test]
        if model is None:
            pred = train_latency_predictor(learn_cells, y[learn], seed=seed)(test_cells)
            how = f"trained from scratch on {n_learn}"
        else:
            head = model.adapt(learn_cells, y[learn])
            pred = model.predict(head, test_cells)
            how = (f"adapted with {n_learn} {'designed' if designed else 'random'} shots (pretrained weight "
                   f"{head.mix:g} against the shots' op-cost model, by leave-one-out)")
        m = latency_metrics(pred, y[test])
        results.append(m)
        print(f"seed {seed}: {args.device} {how}, tested on the other {len(test)}: MAPE {100 * m['mape']:.2f}%  "
              f"Acc(10%) {100 * m['acc@10%']:.1f}%  Spearman {m['spearman']:.4f}")
    if len(results) > 1:
        print(f"over {len(results)} seeds: MAPE {_mean_std([100 * r['mape'] for r in results])} %  "
              f"Acc(10%) {_mean_std([100 * r['acc@10%'] for r in results])} %  "
              f"Spearman {_mean_std([r['spearman'] for r in results])}")
    return 0


def cmd_nasbench(args) -> int:
    """Run one `nasbench` action; data and checkpoint problems print one line and exit 2."""
    from .cost_model.checkpoint import CheckpointError
    from .cost_model.nasbench import NasBenchDataError

    try:
        if args.action == "latency":
            return cmd_nasbench_latency(args)
        if args.action == "shots":
            return cmd_nasbench_shots(args)
        return cmd_nasbench_accuracy(args)
    except (NasBenchDataError, CheckpointError) as exc:
        print(f"nar-tvm nasbench {args.action}: error: {exc}", file=sys.stderr)
        return 2


COMMAND_HELP = "NAS-Bench-201 accuracy and latency prediction"


def add_nasbench_parser(subparsers) -> argparse.ArgumentParser:
    """Register `nasbench` (train | evaluate | latency) on an argparse sub-parser set."""
    p = subparsers.add_parser("nasbench", help=COMMAND_HELP)
    add_nasbench_arguments(p)
    return p


def _add_pretraining_arguments(a: argparse.ArgumentParser) -> None:
    from .cost_model.nasbench import LatencyConfig

    a.add_argument("--pretrained", help="a model saved by `nasbench shots --save-pretrained` instead of "
                                        "pretraining here")
    a.add_argument("--pretrain-csv", help="CSV of the pretraining devices (default: latency's --latency-csv "
                                          "when it has devices besides the target, else the shipped table)")
    a.add_argument("--pretrain-columns", nargs="+", help="pretraining device columns (default: every "
                                                         "<device>_ms column except the target)")
    a.add_argument("--pretrain-steps", type=int, default=LatencyConfig.pretrain_steps,
                   help=f"optimiser steps of the multi-device pretraining (default {LatencyConfig.pretrain_steps})")
    a.add_argument("--cells-csv", help="table with arch_index and cell, for CSVs without a cell column "
                                       "(default: the shipped NAS-Bench-201 table)")


def add_nasbench_arguments(p: argparse.ArgumentParser) -> None:
    """The `nasbench` actions and their options; imports the learning side for its defaults."""
    from .cost_model.nasbench import ACCURACY_EVAL_LABEL, ACCURACY_LABEL, FUSIONS, AccuracyConfig

    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("train", "train accuracy predictors with the seeded-permutation protocol"),
                         ("evaluate", "Kendall tau of the protocol (or of a saved --checkpoint) over seeds")):
        a = actions.add_parser(action, help=text)
        a.add_argument("--accuracy-csv", help="CSV with arch_index, cell and label columns "
                                              "(default: the shipped NAS-Bench-201 table)")
        a.add_argument("--label", default=ACCURACY_LABEL, help=f"column to train on (default {ACCURACY_LABEL})")
        a.add_argument("--eval-label", default=ACCURACY_EVAL_LABEL,
                       help=f"column to evaluate against, on every row (default {ACCURACY_EVAL_LABEL})")
        a.add_argument("--train-size", type=int, default=156, help="training architectures (default 156, 1%%)")
        a.add_argument("--seeds", type=int, nargs="+", default=[0], help="permutation/initialisation seeds")
        a.add_argument("--epochs", type=int, help=f"training epochs (default: {AccuracyConfig.steps} optimiser "
                                                  f"steps or {AccuracyConfig.min_epochs} epochs, whichever is longer)")
        a.add_argument("--fusion", choices=FUSIONS, help="readout over the last block or every block "
                                                         f"(default {AccuracyConfig.fusion})")
        a.add_argument("--ensemble", type=int, help="independently trained members, scores averaged "
                                                    f"(default {AccuracyConfig.ensemble})")
        if action == "train":
            a.add_argument("--out", help="checkpoint path (several seeds: PATH-seedS.pt each)")
        else:
            a.add_argument("--checkpoint", help="evaluate this saved predictor instead of training")
        a.set_defaults(func=cmd_nasbench)

    a = actions.add_parser("latency", help="latency on one device: few-shot adaptation or from scratch")
    a.add_argument("--latency-csv", help="CSV with arch_index and <device>_ms columns "
                                       "(default: the shipped NAS-Bench-201 multi-device table)")
    a.add_argument("--device", required=True, help="target device column, e.g. gold_6226_ms")
    a.add_argument("--shots", type=int, help="adapt a multi-device model with this many target "
                                             "measurements (default 10 when --train-size is not given)")
    a.add_argument("--shot-choice", choices=("design", "random"),
                   help="which target rows --shots measures: 'design' (default) picks the ones whose "
                        "architecture codes best pin down a new device (D-optimal, no target data used), "
                        "'random' a seeded sample; --train-size always samples at random")
    a.add_argument("--train-size", type=int, help="train from scratch on this many target measurements instead")
    a.add_argument("--predict-out", help="instead of testing: learn from every measured row of --device "
                                         "(e.g. the architectures `nasbench shots` listed) and write a "
                                         "prediction for every architecture of --cells-csv to this CSV")
    _add_pretraining_arguments(a)
    a.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the shot/training sample")
    a.set_defaults(func=cmd_nasbench)

    a = actions.add_parser("shots", help="which architectures to measure first on a new device")
    a.add_argument("--shots", type=int, default=10, help="how many (default 10)")
    a.add_argument("--out", help="also write them (arch_index, cell) to this CSV")
    a.add_argument("--save-pretrained", help="save the pretrained model the shots were designed for, to pass "
                                             "to `nasbench latency --pretrained` once they are measured")
    _add_pretraining_arguments(a)
    a.add_argument("--seed", type=int, default=0, help="seed of the pretraining and of the first pick")
    a.set_defaults(func=cmd_nasbench)
