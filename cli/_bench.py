"""``quatrain bench``: the baseline and every backend, one process, same inputs; a table, JSON, a chart."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import click

from ._common import (
    check_backend,
    check_device,
    check_precision,
    emit_json,
    json_option,
    precision_option,
    prepare_output,
    table,
)
from ._progress import StepProgress

PRESETS = ("seed", "small", "tiny")
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
MODE_TITLES = {"train-seq": "train tf 0.9", "train-par": "train tf 1.0", "infer": "inference",
               "train-epoch": "train epoch tf 1.0"}  # fmt: skip


def _check_cell(variant: dict[str, Any]) -> str:
    if variant["kind"] == "baseline":
        return "-"
    if variant["kind"] == "reference":
        return "reference"
    check = variant["check"]
    if check is None:
        return "unchecked"
    if check["ratio"] is None:
        return f"ERROR ({check['worst']})"
    return f"{'ok' if check['ok'] else 'WRONG'} {check['ratio']:.2f}"  # worst err/bound under the one rule


def _num(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def report_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table (the text table and the markdown one share them)."""
    header = ["variant", "vs naive"]
    for title in MODE_TITLES.values():
        header += [f"{title} ms", "x base", "x naive"]
    header += ["warm-up s", "peak MB", "graph"]
    best = {mode: entry["best"] for mode, entry in report["summary"].items() if isinstance(entry, dict)}
    rows = []
    for v in report["variants"]:
        row = [v["name"], _check_cell(v)]
        for mode in MODE_TITLES:
            t = v["modes"][mode]
            mark = " *" if best.get(mode) == v["name"] else ""
            path = " (seq)" if mode == "train-par" and t["path"] == "sequential" else ""
            if t["median_ms"] is None:
                row += ["error", "-", "-"]
                continue
            spec = ".2f" if t["median_ms"] < 100 else ".1f"
            row.append(f"{t['median_ms']:{spec}} ±{t['iqr_ms'] / 2:{spec}}{path}{mark}")
            row.append(_num(t["x_baseline"], ".2f"))
            row.append(_num(t["x_naive"], ".2f"))
        row.append(" / ".join(_num(v["modes"][m]["warmup_ms"], ".1f", 1e-3) for m in MODE_TITLES))
        peaks = [v["modes"][m]["peak_mem_mb"] for m in MODE_TITLES if v["modes"][m]["peak_mem_mb"] is not None]
        row.append(f"{max(peaks):.0f}" if peaks else "-")
        row.append("/".join("y" if v["modes"][m]["graphed"] else "n" for m in MODE_TITLES))
        rows.append(row)
    return header, rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    lines = []
    if "train-seq" in s:
        e = s["train-seq"]
        lines.append(
            f"best sequential train step (tf 0.9): {e['best']} {e['median_ms']:.1f} ms = {e['x_baseline']:.2f}x the "
            f"no-attention baseline; naive / best = {e.get('naive_over_best', float('nan')):.2f}x"
        )
    if "train-par" in s:
        e = s["train-par"]
        lines.append(
            f"best parallel train step (tf 1.0): {e['best']} {e['median_ms']:.1f} ms = "
            f"{e['x_baseline']:.2f}x baseline; "
            f"sequential naive / best parallel = {s.get('naive_seq_over_best_par', float('nan')):.2f}x"
        )
    if "infer" in s:
        e = s["infer"]
        lines.append(
            f"best inference: {e['best']} {e['median_ms']:.1f} ms = {e['x_baseline']:.2f}x baseline; "
            f"naive / best = {e.get('naive_over_best', float('nan')):.2f}x"
        )
        for way, w in e.get("same_way", {}).items():  # eager against eager, compiled against compiled
            lines.append(
                f"inference, {way} against the {way} baseline ({w['baseline']}): {w['best']} "
                f"{w['median_ms']:.1f} ms = {w['x_baseline']:.2f}x"
            )
    if "train-epoch" in s:  # the trainer's own loop (Batcher, lr per step, loss sums) on the same batch
        e = s["train-epoch"]
        by_name = {v["name"]: v for v in report["variants"]}
        step = by_name[e["best"]]["modes"]["train-par"]["median_ms"]
        rate = report["setup"]["batch_size"] * 1000.0 / e["median_ms"]
        share = f" = {step / e['median_ms']:.2f} of its train step's rate" if step else ""
        lines.append(f"train epoch (the trainer's loop, tf 1.0): {e['best']} {rate:,.0f} seq/s{share}")
    return lines


def heading(report: dict[str, Any]) -> str:
    setup, machine = report["setup"], report["machine"]
    hw = machine["hardware"]
    return (
        f"{setup.get('preset') or 'custom'} preset, {setup['device']} {setup['dtype']}"
        f"{' under bf16 autocast' if setup.get('precision') == 'bf16' else ''}"
        f"{' (TF32 matmuls)' if setup.get('tf32_matmul') and setup['device'] == 'cuda' else ''}, "
        f"{setup['config']['num_heads']} heads, batch {setup['batch_size']} x "
        f"{setup['seq_len']}, median ± half IQR of {_steps(setup)}; "
        f"{hw['device_name']}, {machine['threads']} threads, torch {report['versions']['torch']}, {report['date']}"
    )


def _steps(setup: dict[str, Any]) -> str:
    rounds = setup.get("rounds", 1)
    if rounds == 1:
        return f"{setup['iters']} steps after {setup['warmup']} warm-up"
    return f"{rounds} rounds of {setup['iters']} steps, each after {setup['warmup']} warm-up, the variants in turn"


def to_markdown(report: dict[str, Any]) -> str:
    """The committed form of a run: heading, table, headline ratios, notes."""
    header, rows = report_rows(report)
    lines = [f"# quatrain bench: {heading(report)}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    lines.append("")
    lines += [f"- {line}" for line in summary_lines(report)]
    lines += [f"- {note}" for note in notes(report)]
    lines.append("")
    return "\n".join(lines)


def notes(report: dict[str, Any]) -> list[str]:
    found = [
        "vs naive: worst err/bound of the one comparison rule (core/_compare.py), below 1 is correct; "
        "`*` marks the fastest correct backend per mode; WRONG rows are not ranked; warm-up s per mode "
        f"({' / '.join(MODE_TITLES.values())}); graph: whole step replayed from one CUDA graph per mode; "
        "train epoch: the trainer's own loop (quatrain train's batching, learning rate and loss sums) over the "
        "timed steps, a mean per step; peak MB, the most of any mode: on CUDA the allocator's peak from the "
        "mode's first call (capture and optimizer state included), on CPU the most tensor memory one more "
        "(profiled) step holds of what it allocates itself."
    ]
    for v in report["variants"]:
        for mode, t in v["modes"].items():
            if t["note"]:
                found.append(f"{v['name']} {MODE_TITLES[mode]}: {t['note']}")
    for u in report["unavailable"]:
        found.append(f"{u['name']} not run: {'; '.join(u['reasons'])}")
    return found


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib, which is not installed (pip install 'quatrain[plot]')"
        ) from None
    variants = report["variants"]
    modes = list(MODE_TITLES)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        values = [v["modes"][m]["median_ms"] for m in modes]
        errors = [v["modes"][m]["iqr_ms"] / 2 for m in modes]
        wrong = v["correct"] is False
        label = v["name"] + (" (WRONG)" if wrong else "")
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(modes))]
        ax.bar(xs, values, width, yerr=errors, label=label, hatch="//" if wrong else None)
    ax.set_xticks(range(len(modes)), [MODE_TITLES[m] for m in modes])
    ax.set_ylabel("ms per batch (median)")
    ax.set_title(f"quatrain bench: {heading(report)}", fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--preset", type=click.Choice(PRESETS), default="seed", show_default=True, help="Model size.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "mps"]),
    default=None,
    callback=check_device,
    help="Default: the best one here.",
)
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default="fp32", show_default=True, help="Model dtype.")
@precision_option(
    "As `quatrain train --precision` runs: tf32, float32 matmuls on TF32 tensor cores too (CUDA; cuDNN's "
    "RNNs already use them); bf16, float32 weights and the forward under bf16 autocast (--dtype bf16 instead "
    "makes the whole model bfloat16)."
)
@click.option("--backends", "backend_list", default=None, metavar="A,B", help="Backends to run (default: all).")
@click.option(
    "--iters", type=click.IntRange(min=1), default=None, help="Timed steps per variant and mode [10 CPU, 50 GPU]."
)
@click.option("--warmup", type=click.IntRange(min=1), default=None, help="Warm-up steps, timed apart [2 CPU, 4 GPU].")
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Time every variant in turn this many times over (--iters steps each, after a warm-up) and pool the rounds, "
    "so a drift in the machine's speed falls on every variant alike.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Batch size.")
@click.option(
    "--heads", type=click.IntRange(min=1), default=None, help="Attention heads (must divide the preset's hidden size)."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch [torch's default].")
@click.option("--no-graph", is_flag=True, help="On CUDA, run steps eagerly instead of replaying CUDA graphs.")
@json_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
@click.option(
    "--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a markdown table."
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Bar chart PNG."
)
def bench(
    preset: str,
    device: str | None,
    dtype: str,
    precision: str,
    backend_list: str | None,
    iters: int | None,
    warmup: int | None,
    rounds: int,
    batch_size: int,
    heads: int | None,
    threads: int | None,
    no_graph: bool,
    as_json: bool,
    out: Path | None,
    markdown: Path | None,
    plot_path: Path | None,
) -> None:
    """Time the no-attention baseline and every backend: train steps at teacher forcing 0.9 and 1.0, inference.

    One process, the same batch and weights for every variant; each backend is checked against naive in
    the same run. Progress goes to stderr, the table (or --json) to stdout.
    """
    import torch

    from quatrain import ModelConfig, atomic_write_bytes
    from quatrain.registry import detect_hardware, get_registry, run_bench

    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:  # fail before minutes of work
        raise click.ClickException("--plot needs matplotlib, which is not installed (pip install 'quatrain[plot]')")
    device = device or detect_hardware().device
    if precision != "fp32" and dtype != "fp32":
        raise click.BadParameter(f"{precision} runs a float32 model; leave --dtype at fp32", param_hint="--precision")
    check_precision(precision, device)
    names = [n.strip() for n in backend_list.split(",") if n.strip()] if backend_list is not None else None
    if names is not None and not names:
        raise click.BadParameter("names no backend; leave it out to run them all", param_hint="--backends")
    for option, output in (("--out", out), ("--markdown", markdown), ("--plot", plot_path)):
        if output is not None:  # before minutes of measuring: a folder that cannot be written loses nothing
            prepare_output(output, force=True, what=option)
    try:
        config = ModelConfig.preset(preset, **({} if heads is None else {"num_heads": heads}))
    except ValueError as e:  # ConfigError: heads that do not divide the hidden size
        raise click.BadParameter(str(e), param_hint="--heads") from None
    registry = get_registry()
    for name in names or ():
        registry.backend(name)  # an unknown name fails here, before minutes of measuring
        check_backend(name, device, dtype)  # so does one that cannot run here, with its reasons
    on_gpu = device == "cuda"
    if threads is not None:
        torch.set_num_threads(threads)

    with StepProgress() as progress:
        report = run_bench(
            config,
            device=device,
            dtype=getattr(torch, DTYPES[dtype]),
            precision=precision,
            backends=names,
            iters=iters or (50 if on_gpu else 10),
            warmup=warmup or (4 if on_gpu else 2),
            rounds=rounds,
            batch_size=batch_size,
            cuda_graph=on_gpu and not no_graph,
            registry=registry,
            progress=progress,
        )
    report["setup"]["preset"] = preset
    report["command"] = "quatrain " + " ".join(sys.argv[1:])
    if out is not None:
        atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    if markdown is not None:
        atomic_write_bytes(markdown, to_markdown(report).encode())
    if plot_path is not None:
        plot(report, plot_path)
    if as_json:
        emit_json(report)
        return
    header, rows = report_rows(report)
    click.echo(heading(report))
    click.echo(table(rows, header))
    for line in summary_lines(report) + notes(report):
        click.echo(line)
