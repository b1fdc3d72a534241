#!/usr/bin/env python3
"""Where a profiled step's time goes: exclusive time per span name of one rank's trace.

    tools/bench/trace_summary.py <dump>/profile_traces/iteration_<n>/rank0_trace.json [--top N]

The trace is titan-train's (profiling.enable_profiling: Chrome trace-event "X" spans, see
docs/architecture.md, "Traces"). Spans on one thread nest; a span's exclusive time is its
duration less that of the spans directly inside it, so op spans (matmul, attention_backward,
...) carry the compute and the module spans around them only their own glue. Layer indices
are folded ("layers.3.forward" counts as "layers.N.forward"). Only the busiest thread (the
training loop's) is read; shares are of its "step <n>" span.
"""
import argparse
import collections
import json
import re
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with open(args.trace) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    spans = [e for e in events if e.get("ph") == "X"]
    if not spans:
        sys.exit(f"trace_summary: no spans in {args.trace}")
    busiest = collections.Counter(e["tid"] for e in spans).most_common(1)[0][0]
    spans = sorted((e for e in spans if e["tid"] == busiest), key=lambda e: (e["ts"], -e["dur"]))

    exclusive = collections.defaultdict(float)
    calls = collections.Counter()
    open_spans = []
    for span in spans:
        while open_spans and open_spans[-1]["ts"] + open_spans[-1]["dur"] <= span["ts"]:
            open_spans.pop()
        name = re.sub(r"layers\.\d+", "layers.N", span["name"])
        if open_spans:
            exclusive[open_spans[-1]["folded"]] -= span["dur"]
        exclusive[name] += span["dur"]
        calls[name] += 1
        open_spans.append(dict(span, folded=name))

    steps = [e for e in spans if e["name"].startswith("step ")]
    total = sum(e["dur"] for e in steps) or sum(exclusive.values())
    print(f"{'span':44s} {'calls':>6s} {'ms':>9s} {'share':>7s}")
    print(f"{'(the step)':44s} {len(steps):6d} {total / 1e3:9.1f} {100.0:6.1f}%")
    for name, us in sorted(exclusive.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name:44s} {calls[name]:6d} {us / 1e3:9.1f} {100 * us / total:6.1f}%")


if __name__ == "__main__":
    main()
