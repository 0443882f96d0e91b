#!/usr/bin/env python3
"""Renders a benchmark's results (target/bench/results.json, or the file
named) as the Markdown table docs/performance.md shows.

    python3 scripts/bench-table.py [results.json]
"""
import json
import sys

# Units counted in whole things get thousands separators and no decimals.
COUNTS = {"deliveries/s", "requests/s", "events/s", "tuples"}


def value(v, unit):
    if v is None:
        return "(none)"
    if unit == "ratio":
        return f"{v:.2f}"
    if unit in COUNTS:
        return f"{v:,.0f} {unit}"
    if unit in ("µs", "us"):
        return f"{v:,.0f} µs"
    return f"{v:.1f} {unit}"


def target(f):
    if f.get("target") is None:
        return ""
    return f"{f['op']} {f['target']:g}"


def met(f):
    return {True: "met", False: "MISSED"}.get(f.get("met"), "")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    results = json.load(open(path, encoding="utf-8"))
    print("| figure | measured | target | |")
    print("| --- | --- | --- | --- |")
    for f in results["figures"]:
        print(f"| {f['name']} | {value(f['value'], f['unit'])} | {target(f)} | {met(f)} |")


if __name__ == "__main__":
    main()
