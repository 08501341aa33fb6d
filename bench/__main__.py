"""`python -m bench`: run every benchmark in bench/ against servers of its own, print one table of figures against the issues' targets, write bench/results.json.

Options: --only availability,notices   run some modules
         --quick                       smaller sizes, for a smoke run (the figures then do not count)
         --json PATH                   where to write the results (default bench/results.json)
Exit status: 0 when every figure meets its target, 1 when one misses or a module fails, 2 when a module is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import servers

HERE = Path(__file__).resolve().parent
ORDER = ("availability", "booking_race", "booking", "vitals", "board", "notices")
# a module that overruns is stopped, so the whole run stays bounded (10 minutes on 2 cores is the target)
BUDGET_SECONDS = {"availability": 300, "booking_race": 90, "booking": 120, "vitals": 150, "board": 90, "notices": 120}
QUICK = {
    "availability": {"total": 50_000, "small": 10_000, "runs": 20},
    "booking_race": {"rounds": 3},
    "booking": {"seconds": 2, "rounds": 2, "days": 20, "drain_seconds": 5},
    "vitals": {"seconds": 5},
    "board": {"requests": 50},
    "notices": {"count": 1_000},
}


@dataclass(frozen=True)
class Figure:
    module: str
    label: str
    value: Callable[[dict[str, Any]], Any]
    unit: str
    target: str
    ok: Callable[[dict[str, Any]], bool] | None  # None: shown for context, no target of its own


def _r(*keys: str) -> Callable[[dict[str, Any]], Any]:
    """The first of `keys` the result has (modules name some figures app_p99_ms, others p99_ms)."""
    def value(r: dict[str, Any]) -> Any:
        for k in keys:
            if k in r:
                return r[k]
        raise KeyError(" or ".join(keys))
    return value


def _code(r: dict[str, Any], status: int) -> int:
    codes = r.get("status_codes", {})
    return int(codes.get(status, codes.get(str(status), 0)))


FIGURES = (
    Figure("availability", "Availability search p50 / p95, 4 weeks, 10k appointments", lambda r: f"{r['small_p50_ms']} / {r['small_p95_ms']}", "ms",
           "baseline", None),
    Figure("availability", "Availability search p95, 4 weeks, 1M appointments", _r("large_p95_ms"), "ms", "< 50 ms",
           lambda r: r["large_p95_ms"] < 50),
    Figure("availability", "Availability p95 growth 10k -> 1M", _r("p95_growth"), "x", "<= 1.5x", lambda r: r["p95_growth"] <= 1.5),
    Figure("booking_race", "Concurrent bookings of one chair and start: one 201 per round",
           lambda r: f"{_code(r, 201)} of {r['requests']} in {r['rounds']} rounds of {r['concurrency']}", "", "exactly 1 per round",
           lambda r: r["one_winner_every_round"] and _code(r, 201) == r["rounds"]),
    Figure("booking_race", "... the others 409 / 5xx", lambda r: f"{_code(r, 409)} / {r['server_errors']}", "", "all / 0",
           lambda r: _code(r, 409) == r["requests"] - r["rounds"] and r["server_errors"] == 0),
    Figure("booking_race", "... booking latency under the race p50 / p95", lambda r: f"{r['p50_ms']} / {r['p95_ms']}", "ms", "context", None),
    Figure("booking", "Booking POST throughput vs bare Litestar+asyncpg INSERT (32 clients, distinct free slots)", _r("throughput_ratio"),
           "x", ">= 0.15x", lambda r: r["throughput_ratio"] >= 0.15),
    Figure("booking", "Booking POST p50 / p95 / p99 (32 clients)", lambda r: f"{r['app_p50_ms']} / {r['app_p95_ms']} / {r['app_p99_ms']}",
           "ms", "p99 < 100 ms", lambda r: r["app_p99_ms"] < 100 and set(r["app_statuses"]) == {201}),
    Figure("booking", "... per second: bookings / bare inserts / the app's stack floor; then one worker's follow-ups",
           lambda r: f"{r['app_rps']} / {r['bare_rps']} / {r['stack_floor_rps']}; {r['drained']} of {r['at_commit']['appointments']} in {r['drain_seconds']} s",
           "", "context", None),
    Figure("vitals", "Vitals POST throughput vs bare Litestar+asyncpg INSERT (32 clients)", _r("throughput_ratio"), "x", ">= 0.5x",
           lambda r: r["throughput_ratio"] >= 0.5),
    Figure("vitals", "Vitals POST p50 / p95 / p99 (32 clients)",
           lambda r: " / ".join(str(_r(f"app_{p}_ms", f"{p}_ms")(r)) for p in ("p50", "p95", "p99")), "ms", "p99 < 50 ms",
           lambda r: _r("app_p99_ms", "p99_ms")(r) < 50),
    Figure("vitals", "... requests per second: app / bare endpoint", lambda r: f"{r['app_rps']} / {r['bare_rps']}", "/s", "context", None),
    Figure("board", "/board render p95, 40 active sessions", _r("board_p95_ms", "p95_ms"), "ms", "< 40 ms",
           lambda r: _r("board_p95_ms", "p95_ms")(r) < 40),
    Figure("board", "... p50 / p99; SSE fragment p95; JSON twin p95",
           lambda r: f"{r['board_p50_ms']} / {r['board_p99_ms']}; {r['fragment_p95_ms']}; {r['json_p95_ms']}", "ms", "context", None),
    Figure("notices", "Drain 10,000 notices into a local SMTP sink", lambda r: f"{r['seconds']} s for {r['notices']:,}", "", "< 30 s",
           lambda r: r["seconds"] < 30 and r["sent"] == r["notices"]),
    Figure("notices", "Duplicate deliveries (by Message-ID)", _r("duplicates"), "", "0", lambda r: r["duplicates"] == 0),
)


async def run_module(name: str, ctx: dict[str, Any], budget: float) -> dict[str, Any]:
    """{status: ok|missing|error|timeout, seconds, result?, error?}"""
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return {"status": "missing", "seconds": 0.0, "error": f"bench/{name}.py does not exist yet"}
        raise
    if not hasattr(module, "run"):
        return {"status": "error", "seconds": 0.0, "error": f"bench/{name}.py has no `async def run(ctx)`"}
    t0 = time.perf_counter()
    try:
        result = await asyncio.wait_for(module.run(dict(ctx)), timeout=budget)
    except asyncio.TimeoutError:
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1), "error": f"stopped after {budget:.0f} s"}
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        return {"status": "error", "seconds": round(time.perf_counter() - t0, 1), "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}
    return {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), "result": result}


def evaluate(outcomes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for f in FIGURES:
        out = outcomes.get(f.module)
        if out is None:
            continue
        row = {"module": f.module, "figure": f.label, "target": f.target, "measured": None, "unit": f.unit, "verdict": None}
        if out["status"] != "ok":
            row["verdict"] = out["status"]
        else:
            try:
                row["measured"] = f.value(out["result"])
                row["verdict"] = "info" if f.ok is None else ("pass" if f.ok(out["result"]) else "FAIL")
            except (KeyError, TypeError, ZeroDivisionError) as exc:
                row["verdict"] = "error"
                row["measured"] = f"result lacks {exc}"
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    headers = ("Figure", "Measured", "Target", "Result")
    body = []
    for r in rows:
        measured = "—" if r["measured"] is None else f"{r['measured']}{(' ' + r['unit']) if r['unit'] and not str(r['measured']).startswith('result') else ''}"
        body.append((r["figure"], measured, r["target"], r["verdict"]))
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *body)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), line, *(fmt.format(*map(str, b)) for b in body)])


def machine(load_at_start: float) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        # other work on the machine skews every figure: the 1-minute load before and after the run says how much
        "load_average_1m_start": round(load_at_start, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def main_async(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    outcomes: dict[str, dict[str, Any]] = {}
    async with servers() as base:
        where = ", ".join(f"{k} {'embedded' if v else 'from the environment'}" for k, v in base["embedded"].items())
        print(f"bench: {where}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}", flush=True)
        for name in names:
            ctx = {"database_url": base["database_url"], "redis_url": base["redis_url"], "quick": args.quick}
            if args.quick:
                ctx |= QUICK.get(name, {})
            print(f"  {name} ...", end="", flush=True)
            out = await run_module(name, ctx, BUDGET_SECONDS.get(name, 120))
            outcomes[name] = out
            note = out.get("error", "")
            print(f" {out['status']} in {out['seconds']} s{(': ' + note) if note else ''}", flush=True)
            if out["status"] == "error" and args.verbose:
                print(out.get("traceback", ""), file=sys.stderr)
    rows = evaluate(outcomes)
    total = time.perf_counter() - started
    print()
    print(table(rows))
    print(f"\nwhole run: {total:.0f} s; load average {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
          f"{' (quick sizes: not the issues figures)' if args.quick else ''}")
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": round(total, 1),
        "machine": machine(load_at_start),
        "figures": rows,
        "modules": {k: {kk: vv for kk, vv in v.items() if kk != "traceback"} for k, v in outcomes.items()},
    }
    Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    if any(o["status"] in ("error", "timeout") for o in outcomes.values()) or any(r["verdict"] in ("FAIL", "error") for r in rows):
        return 1
    if any(o["status"] == "missing" for o in outcomes.values()):
        return 2
    return 0


def main() -> None:
    # the table is the output: servers, sinks and migrations chatter at INFO (an SMTP sink logs every command)
    logging.disable(logging.INFO)
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated: " + ", ".join(ORDER))
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failing modules")
    sys.exit(asyncio.run(main_async(ap.parse_args())))


if __name__ == "__main__":
    main()
