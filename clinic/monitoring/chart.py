"""The session chart as server-rendered SVG: BP (systolic/diastolic) and heart rate above, SpO2 below, over minutes since dosing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import Markup

from clinic.monitoring import rules
from clinic.scheduling.protocols import Thresholds

W, H = 800, 330
LEFT, RIGHT = 44, 12
TOP_Y0, TOP_Y1 = 14, 196  # BP + HR panel
LOW_Y0, LOW_Y1 = 222, 298  # SpO2 panel
AXIS_Y = 316


def _scale(v: float, lo: float, hi: float, y0: float, y1: float) -> float:
    return y1 - (v - lo) / (hi - lo) * (y1 - y0)


def session_chart(
    readings: Sequence[rules.Reading],
    *,
    tz: str,
    start: datetime,
    end: datetime,
    dosing_started_at: datetime | None,
    checks: Sequence[rules.CheckState] = (),
    thresholds: Thresholds,
) -> Markup:
    """`start`..`end` is the time span shown; x labels are minutes from dosing (or clock times before it)."""
    span = max((end - start).total_seconds() / 60, 30.0)

    def x(t: datetime) -> float:
        return LEFT + (t - start).total_seconds() / 60 / span * (W - LEFT - RIGHT)

    bps = [r for r in readings if r.has("bp")]
    hrs = [r for r in readings if r.has("hr")]
    sats = [r for r in readings if r.has("spo2")]
    top_lo = min([40] + [r.diastolic - 10 for r in bps] + [r.heart_rate - 10 for r in hrs])  # type: ignore[operator]
    top_hi = max([200] + [r.systolic + 10 for r in bps] + [r.heart_rate + 10 for r in hrs])  # type: ignore[operator]
    sat_lo = min([85] + [r.spo2 - 2 for r in sats])  # type: ignore[operator]

    def ty(v: float) -> float:
        return _scale(v, top_lo, top_hi, TOP_Y0, TOP_Y1)

    def sy(v: float) -> float:
        return _scale(v, sat_lo, 100, LOW_Y0, LOW_Y1)

    out: list[str] = [
        f'<svg class="session-chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" preserveAspectRatio="xMidYMid meet">',
        '<title id="chart-title">Blood pressure, heart rate and SpO2 over the session</title>',
        f'<desc id="chart-desc">{len(bps)} blood pressure, {len(hrs)} heart rate and {len(sats)} SpO2 readings. The timeline lists every value.</desc>',
        f'<rect x="{LEFT}" y="{TOP_Y0}" width="{W - LEFT - RIGHT}" height="{TOP_Y1 - TOP_Y0}" class="panel"/>',
        f'<rect x="{LEFT}" y="{LOW_Y0}" width="{W - LEFT - RIGHT}" height="{LOW_Y1 - LOW_Y0}" class="panel"/>',
    ]
    for v in range(int(top_lo // 20 * 20 + 20), int(top_hi) + 1, 20):
        y = ty(v)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/><text x="{LEFT - 6}" y="{y + 4:.1f}" class="ylab">{v}</text>')
    for v in (90, 95, 100):
        if v >= sat_lo:
            y = sy(v)
            out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/><text x="{LEFT - 6}" y="{y + 4:.1f}" class="ylab">{v}</text>')
    # the protocol's alert line for systolic BP and its urgent line for SpO2, as faint guides
    alert_bp, urgent_spo2 = ty(thresholds.alert.systolic_at_least), sy(thresholds.urgent.spo2_below)
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{alert_bp:.1f}" y2="{alert_bp:.1f}" class="limit"/>')
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{urgent_spo2:.1f}" y2="{urgent_spo2:.1f}" class="limit"/>')
    step = 10 if span <= 90 else 20 if span <= 200 else 30
    origin = dosing_started_at or start
    first = -int((origin - start).total_seconds() // 60 // step) * step
    m = first
    while origin + timedelta(minutes=m) <= end:
        t = origin + timedelta(minutes=m)
        if t >= start:
            xx = x(t)
            label = (f"+{m}" if m > 0 else str(m)) if dosing_started_at else rules.hm(t, tz)
            out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP_Y0}" y2="{LOW_Y1}" class="vgrid"/><text x="{xx:.1f}" y="{AXIS_Y}" class="xlab">{label}</text>')
        m += step
    if dosing_started_at and start <= dosing_started_at <= end:
        xx = x(dosing_started_at)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP_Y0}" y2="{LOW_Y1}" class="dose"/><text x="{xx + 4:.1f}" y="{TOP_Y0 + 12}" class="tag">dose</text>')
    for c in checks:
        if c.due_at and start <= c.due_at <= end:
            xx = x(c.due_at)
            out.append(f'<path d="M{xx - 5:.1f},{LOW_Y1 + 1} l5,-7 l5,7 z" class="check {c.status}"><title>{c.label}: {c.status}</title></path>')
    for r in bps:
        xx = x(r.taken_at)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{ty(r.systolic):.1f}" y2="{ty(r.diastolic):.1f}" class="bpbar"/>')  # type: ignore[arg-type]
    for name, series, key in (("sys", bps, "systolic"), ("dia", bps, "diastolic"), ("hr", hrs, "heart_rate")):
        pts = " ".join(f"{x(r.taken_at):.1f},{ty(getattr(r, key)):.1f}" for r in series)
        if len(series) > 1:
            out.append(f'<polyline points="{pts}" class="line {name}"/>')
        for r in series:
            out.append(f'<circle cx="{x(r.taken_at):.1f}" cy="{ty(getattr(r, key)):.1f}" r="4" class="pt {name}"><title>{rules.hm(r.taken_at, tz)} {key.replace("_", " ")} {getattr(r, key)}</title></circle>')
    if sats:
        pts = " ".join(f"{x(r.taken_at):.1f},{sy(r.spo2):.1f}" for r in sats)  # type: ignore[arg-type]
        if len(sats) > 1:
            out.append(f'<polyline points="{pts}" class="line spo2"/>')
        for r in sats:
            out.append(f'<circle cx="{x(r.taken_at):.1f}" cy="{sy(r.spo2):.1f}" r="4" class="pt spo2"><title>{rules.hm(r.taken_at, tz)} SpO2 {r.spo2}%</title></circle>')  # type: ignore[arg-type]
    out.append(f'<text x="{LEFT + 6}" y="{TOP_Y1 - 6}" class="legend"><tspan class="sys">● systolic</tspan> <tspan class="dia">● diastolic</tspan> <tspan class="hr">● heart rate</tspan></text>')
    out.append(f'<text x="{LEFT + 6}" y="{LOW_Y1 - 6}" class="legend"><tspan class="spo2">● SpO2 %</tspan></text>')
    out.append("</svg>")
    return Markup("".join(out))
