#!/usr/bin/python3
"""Plots loss, tokens/s and MFU against step from titan-train's metrics.jsonl files.

  /usr/bin/python3 tools/plot_metrics.py RUN1/metrics.jsonl [RUN2/metrics.jsonl ...] -o plot.png [--title T]

One PNG, three panels sharing the step axis: loss (solid; val_loss dashed, where the run
validated), tokens/s per device ("tps") and MFU in percent ("mfu"). Each run is one colour
and is named after the folder that holds its metrics.jsonl (the job's dump_folder).

The file is what lib/titan/metrics/step_log.h writes: one JSON object per line with keys
step, loss, grad_norm, lr, tps, tflops, mfu, memory_gib and optionally comm_percent, eta_s,
val_loss, val_perplexity, tokens, elapsed_s. A resumed run appends to the same file, so a
step may appear twice: the last line wins. A non-finite value is written as null and is
left out of its curve. A line that is not a JSON object with a step (a run killed mid-line)
is skipped with a warning.

Needs matplotlib (Debian's python3-matplotlib, run as /usr/bin/python3; tools/setup.sh
--with-plots installs it). Exit codes: 0 written; 2 bad input (a missing or empty file,
matplotlib missing), one line "plot_metrics: error: ..." on stderr.
"""

import argparse
import json
import math
import os
import sys

# (key in metrics.jsonl, axis label) for the panels under the loss panel.
RATE_PANELS = [("tps", "tokens/s per device"), ("mfu", "MFU (%)")]
# Above this many points a curve is drawn without markers (they would only blur it).
MARKER_LIMIT = 60


class InputError(Exception):
    pass


def read_run(path):
    """Returns the run's records sorted by step, the last line of each step winning."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.readlines()
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror})") from None
    by_step = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            print(f"plot_metrics: warning: {path}:{number} is not a metrics line, skipped", file=sys.stderr)
            continue
        by_step[step] = record
    if not by_step:
        raise InputError(f"{path}: holds no metrics lines (is it a titan-train metrics.jsonl?)")
    return [by_step[step] for step in sorted(by_step)]


def series(records, key):
    """(steps, values) for the records where key is a finite number."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(record["step"])
            values.append(float(value))
    return steps, values


def run_labels(paths):
    """The folder name of each file; longer path tails where two runs share a name."""
    parts = [os.path.abspath(p).split(os.sep)[:-1] for p in paths]
    depth = 1
    labels = ["/".join(p[-depth:]) or "." for p in parts]
    while len(set(labels)) < len(labels) and depth < max(len(p) for p in parts):
        depth += 1
        labels = ["/".join(p[-depth:]) or "." for p in parts]
    # The same file given twice still gets two legend entries that can be told apart.
    seen = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return labels


def plot(runs, output, title):
    try:
        import matplotlib
    except ImportError:
        raise InputError("needs matplotlib: apt-get install python3-matplotlib "
                         "(or tools/setup.sh --with-plots) and run it with /usr/bin/python3") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True, constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, records) in enumerate(runs):
        colour = colours[index % len(colours)]

        def draw(axis, key, name, **style):
            steps, values = series(records, key)
            if not steps:
                return
            marker = "o" if len(steps) <= MARKER_LIMIT else None
            axis.plot(steps, values, color=colour, marker=marker, markersize=3, label=name, **style)

        draw(axes[0], "loss", f"{label} loss", linestyle="-")
        draw(axes[0], "val_loss", f"{label} val_loss", linestyle="--")
        for axis, (key, _) in zip(axes[1:], RATE_PANELS):
            draw(axis, key, label, linestyle="-")

    axes[0].set_ylabel("loss")
    for axis, (_, name) in zip(axes[1:], RATE_PANELS):
        axis.set_ylabel(name)
        axis.set_ylim(bottom=0)
    axes[-1].set_xlabel("step")
    for axis in axes:
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    figure.suptitle(title)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    # No Software entry: the PNG does not change with the matplotlib version.
    figure.savefig(output, dpi=100, metadata={"Software": None})
    plt.close(figure)


def main(argv):
    parser = argparse.ArgumentParser(
        prog="plot_metrics.py",
        description="Plot loss, tokens/s and MFU against step from titan-train metrics.jsonl files.")
    parser.add_argument("metrics", nargs="+", help="metrics.jsonl files, one per run")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write")
    parser.add_argument("--title", help="figure title (default: the run names)")
    args = parser.parse_args(argv)
    try:
        labels = run_labels(args.metrics)
        runs = [(label, read_run(path)) for label, path in zip(labels, args.metrics)]
        plot(runs, args.output, args.title if args.title is not None else ", ".join(labels))
    except InputError as error:
        print(f"plot_metrics: error: {error}", file=sys.stderr)
        return 2
    steps = sum(len(records) for _, records in runs)
    print(f"{args.output}: {len(runs)} run{'s' if len(runs) != 1 else ''}, {steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
