"""Outcome charts as server-rendered SVG: one instrument's totals over time for a patient (bands shaded, dosing sessions marked,
response and remission lines), and the clinic's mean change by week of course per protocol. Every number is also in a table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from clinic.outcomes import rules
from clinic.outcomes.instruments import INSTRUMENTS
from clinic.outcomes.models import OutcomeMeasure
from clinic.timeutil import to_local

W, H = 800, 300
LEFT, RIGHT, TOP, BOTTOM = 46, 16, 14, 256
AXIS_Y = 276


def _ylines(lo: float, hi: float, y) -> list[str]:
    step = 5 if hi - lo <= 30 else 10 if hi - lo <= 80 else 20
    first = int(lo // step * step)
    return [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" class="ylab">{v}</text>' for v in range(first, int(hi) + 1, step) if v >= lo]


def trend_chart(instrument: str, measures: Sequence[OutcomeMeasure], *, visits: Sequence[rules.Visit], baseline: rules.Taken | None,
                tz: str, chart_id: str) -> Markup:
    """Totals of one instrument over the calendar; dosing sessions as ticks on the time axis."""
    inst = INSTRUMENTS[instrument]
    times = [m.completed_at for m in measures] + [v.at for v in visits]
    if not times:
        return Markup("")
    start, end = min(times) - timedelta(days=2), max(times) + timedelta(days=2)
    span = (end - start).total_seconds()

    def x(t: datetime) -> float:
        return LEFT + (t - start).total_seconds() / span * (W - LEFT - RIGHT)

    def y(v: float) -> float:
        return BOTTOM - v / inst.total_max * (BOTTOM - TOP)

    out = [
        f'<svg class="outcome-chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(inst.short)} total over time</title>',
        f'<desc id="{chart_id}-d">{len(measures)} answer{"s" if len(measures) != 1 else ""} and {len(visits)} dosing session'
        f'{"s" if len(visits) != 1 else ""}; the table beside the chart lists every value.</desc>',
    ]
    for i, b in enumerate(inst.bands):
        top, bottom = y(b.high + 0.5 if b.high < inst.total_max else b.high), y(b.low - 0.5 if b.low > 0 else 0)
        out.append(f'<rect x="{LEFT}" y="{top:.1f}" width="{W - LEFT - RIGHT}" height="{bottom - top:.1f}" class="band band-{i}"/>'
                   f'<text x="{W - RIGHT - 6}" y="{top + 13:.1f}" class="bandlab">{escape(b.label)}</text>')
    if not inst.bands:
        out.append(f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{BOTTOM - TOP}" class="panel"/>')
    out.extend(_ylines(0, inst.total_max, y))
    # a label every week or so, as many as fit
    days = max(int(span // 86400), 1)
    step = max(1, -(-days // 8))
    day = to_local(start, tz).date() + timedelta(days=1)
    while True:
        at = datetime.combine(day, datetime.min.time(), ZoneInfo(tz))
        if at > end:
            break
        out.append(f'<text x="{x(at):.1f}" y="{AXIS_Y}" class="xlab">{day.day} {day:%b}</text>')
        day += timedelta(days=step)
    for v in visits:
        done = v.dosing_started_at is not None  # a booked session is drawn hollow
        out.append(f'<path d="M{x(v.at):.1f},{BOTTOM} l-5,9 l10,0 z" class="dose-mark{"" if done else " planned"}"><title>'
                   f'{"Dosing" if done else "Booked"}: {escape(rules.KIND_LABELS.get(v.kind, v.kind))}, {to_local(v.at, tz):%d %b %Y}</title></path>')
    if inst.response_and_remission:
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(4.5):.1f}" y2="{y(4.5):.1f}" class="goal remission"/>'
                   f'<text x="{LEFT + 6}" y="{y(4.5) - 4:.1f}" class="goallab">remission: under 5</text>')
        if baseline is not None and baseline.total > 0:
            line = baseline.total / 2
            out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(line):.1f}" y2="{y(line):.1f}" class="goal response"/>'
                       f'<text x="{LEFT + 6}" y="{y(line) - 4:.1f}" class="goallab">response: {line:g} or less (half of baseline {baseline.total})</text>')
    pts = [(x(m.completed_at), y(m.total), m) for m in measures]
    if len(pts) > 1:
        out.append('<polyline points="' + " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in pts) + '" class="line"/>')
    for px, py, m in pts:
        base = baseline is not None and baseline.id == m.id
        out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{7 if base else 5}" class="pt{" base" if base else ""}">'
                   f'<title>{to_local(m.completed_at, tz):%d %b %Y}: {m.total}{" (baseline)" if base else ""}</title></circle>')
    out.append("</svg>")
    return Markup("".join(out))


def weekly_chart(instrument: str, by_kind: dict[str, list[rules.WeekPoint]], *, chart_id: str) -> Markup:
    """Mean change from baseline by week of course, one line per protocol; withheld weeks (< 5 patients) have no point."""
    inst = INSTRUMENTS[instrument]
    values = [p.mean_change for points in by_kind.values() for p in points if p.mean_change is not None]
    if not values:
        return Markup("")
    last = max(p.week for points in by_kind.values() for p in points)
    lo, hi = min(0.0, *values) - 2, max(0.0, *values) + 2

    def x(week: float) -> float:
        return LEFT + week / max(last, 1) * (W - LEFT - RIGHT - 60)

    def y(v: float) -> float:
        return TOP + (hi - v) / (hi - lo) * (BOTTOM - TOP)

    out = [
        f'<svg class="outcome-chart weekly" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">Mean change in {escape(inst.short)} total by week of course</title>',
        f'<desc id="{chart_id}-d">One line per protocol; below zero is better. The table lists every value.</desc>',
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{BOTTOM - TOP}" class="panel"/>',
    ]
    out.extend(_ylines(lo, hi, y))
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" class="zero"/>')
    for w in range(0, last + 1):
        out.append(f'<text x="{x(w):.1f}" y="{AXIS_Y}" class="xlab">{"baseline" if w == 0 else f"wk {w}"}</text>')
    for n, (kind, points) in enumerate(by_kind.items()):
        shown = [(0, 0.0)] + [(p.week, p.mean_change) for p in points if p.mean_change is not None]
        out.append(f'<polyline points="{" ".join(f"{x(w):.1f},{y(v):.1f}" for w, v in shown)}" class="wline kind-{kind}"/>')
        for p in points:
            if p.mean_change is None:
                continue  # a withheld week has no point; the line joins the weeks either side
            out.append(f'<circle cx="{x(p.week):.1f}" cy="{y(p.mean_change):.1f}" r="5" class="wpt kind-{kind}"><title>'
                       f'{escape(rules.KIND_LABELS[kind])}, week {p.week}: {p.mean_change:+g} ({p.patients} patients)</title></circle>')
        out.append(f'<text x="{W - RIGHT - 4}" y="{TOP + 16 + 18 * n}" class="legend kind-{kind}">● {escape(rules.KIND_LABELS[kind])}</text>')
    out.append("</svg>")
    return Markup("".join(out))
