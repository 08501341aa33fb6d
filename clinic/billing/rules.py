"""Pure billing rules: patient share, course estimates, GFE deadlines in business days, charges from session facts, claim states.

No I/O here: every function takes plain values and returns plain values (money in integer cents).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import lru_cache

import holidays

from clinic.errors import RuleBroken
from clinic.scheduling.protocols import Billing, Protocol

# If a provider's billed total exceeds its GFE total by this much, the patient may dispute (45 CFR 149.620).
GFE_DISPUTE_THRESHOLD_CENTS = 40_000
GFE_DISPUTE_DAYS = 120

GFE_DISCLAIMERS = (
    "There may be other items or services your provider recommends as part of your care that are not "
    "included in this Good Faith Estimate; they will be estimated separately.",
    "This Good Faith Estimate shows the costs of items and services that are reasonably expected for your "
    "health care needs. It is only an estimate: actual items, services or charges may differ.",
    "You have the right to initiate a patient-provider dispute resolution process if the actual billed "
    "charges are substantially in excess of this estimate ($400 or more for any provider). You may contact "
    "the provider to let them know, ask to update the bill, or ask about financial assistance; you can start "
    "a dispute within 120 calendar days of the date on the original bill through the U.S. Department of "
    "Health and Human Services (www.cms.gov/nosurprises, 1-800-985-3059). Starting a dispute does not affect "
    "the quality of the care you receive.",
    "This Good Faith Estimate is not a contract and does not require you to obtain the items or services from "
    "any of the providers listed.",
)


MAX_CENTS = 1_000_000_000  # $10M: far above any visit, far below the database's integer limit
_CODE = re.compile(r"^[A-Z0-9]{1,10}$")
_DOLLARS = re.compile(r"^(?P<sign>-)?\$?(?P<whole>\d{1,3}(?:,\d{3})+|\d*)(?:\.(?P<frac>\d{1,2}))?$")

# ---- money --------------------------------------------------------------------------------------


def cents(value: object, *, field: str, allow_none: bool = False) -> int | None:
    """Whole, non-negative cents from an int or a dollars string ("1,234.50"); refuses floats' fractions of a cent."""
    if value is None or value == "":
        if allow_none:
            return None
        raise RuleBroken("Enter an amount.", field=field)
    if isinstance(value, bool):
        raise RuleBroken("Enter an amount in cents.", field=field)
    if isinstance(value, int):
        out = value
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if len(text) > 20:  # past any real amount, and past what int() will parse
            raise RuleBroken("That amount is too large.", field=field)
        m = _DOLLARS.match(text)
        if not m:
            raise RuleBroken("Enter dollars and cents, e.g. 1250.00.", field=field)
        out = int(m["whole"].replace(",", "") or 0) * 100 + int((m["frac"] or "").ljust(2, "0"))
        if m["sign"]:
            out = -out
    else:
        raise RuleBroken("Money is whole cents (an integer), e.g. 12500 for $125.00.", field=field)
    if out < 0:
        raise RuleBroken("An amount cannot be negative.", field=field)
    if out > MAX_CENTS:
        raise RuleBroken("That amount is too large for one item (over $10,000,000).", field=field)
    return out


def code(value: object, *, field: str) -> str:
    """A CPT/HCPCS code: up to 10 letters and digits."""
    text = str(value).strip().upper() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _CODE.match(text):
        raise RuleBroken("A service code is up to 10 letters and digits, e.g. 96365 or G2083.", field=field)
    return text


def whole(value: object, *, field: str, low: int, high: int, allow_none: bool = False) -> int | None:
    """A whole number in [low, high] from an int or digits."""
    if value is None or value == "":
        if allow_none:
            return None
        raise RuleBroken(f"Enter a whole number from {low} to {high}.", field=field)
    digits = isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 12
    if isinstance(value, bool) or not (isinstance(value, int) or digits):
        raise RuleBroken(f"Enter a whole number from {low} to {high}.", field=field)
    out = int(value)
    if not low <= out <= high:
        raise RuleBroken(f"Enter a whole number from {low} to {high}.", field=field)
    return out


def percent(value: object, *, field: str, allow_none: bool = False) -> int | None:
    if value is None or value == "":
        if allow_none:
            return None
        raise RuleBroken("Enter a percentage from 0 to 100.", field=field)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RuleBroken("A percentage is a whole number from 0 to 100.", field=field)
    text = str(value).strip().removesuffix("%")
    # ASCII only and short: "²".isdigit() is true but int("²") raises, as does a 5000-digit string
    if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 6):
        raise RuleBroken("A percentage is a whole number from 0 to 100.", field=field)
    out = int(text)
    if not 0 <= out <= 100:
        raise RuleBroken("A percentage must be between 0 and 100.", field=field)
    return out


# ---- the patient's share --------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """An insured patient's plan as it stands before a visit."""

    copay: int = 0
    coinsurance_pct: int = 0
    deductible_remaining: int = 0
    oop_remaining: int = 0
    allowed: Mapping[str, int] = field(default_factory=dict)  # per unit of a code
    allowed_pct: int | None = None
    not_covered: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Line:
    code: str
    units: int
    fee: int  # the clinic's charge per unit

    @property
    def charge(self) -> int:
        return self.fee * self.units


@dataclass(frozen=True)
class Share:
    allowed: int
    copay: int
    deductible: int
    coinsurance: int
    not_covered: int
    patient: int  # what the patient pays for the visit, non-covered amounts included
    plan: int


def share_of_allowed(allowed: int, terms: Terms, not_covered: int = 0) -> Share:
    """DOMAIN.md §4: copay, then deductible, then coinsurance; capped at OOP remaining and the allowed amount."""
    rest = allowed
    copay = min(terms.copay, rest)
    rest -= copay
    deductible = min(terms.deductible_remaining, rest)
    rest -= deductible
    coinsurance = (rest * terms.coinsurance_pct + 50) // 100  # half a cent rounds up
    covered_share = min(copay + deductible + coinsurance, terms.oop_remaining, allowed)
    return Share(
        allowed=allowed,
        copay=copay,
        deductible=min(deductible, covered_share),
        coinsurance=coinsurance,
        not_covered=not_covered,
        patient=covered_share + not_covered,
        plan=allowed - covered_share,
    )


def allowed_for(line: Line, terms: Terms) -> int | None:
    """The plan's allowed amount for a line; None when the plan does not cover it."""
    if line.code in terms.not_covered:
        return None
    if line.code in terms.allowed:
        return int(terms.allowed[line.code]) * line.units
    if terms.allowed_pct is not None:
        return (line.charge * terms.allowed_pct + 50) // 100
    raise RuleBroken(f"The coverage has no allowed amount for {line.code}: enter one, an allowed % of charge, "
        f"or mark {line.code} as not covered.", field="allowed_amounts")


def visit_share(lines: Sequence[Line], terms: Terms) -> Share:
    allowed = 0
    not_covered = 0
    for line in lines:
        a = allowed_for(line, terms)
        if a is None:
            not_covered += line.charge
        else:
            allowed += a
    return share_of_allowed(allowed, terms, not_covered)


def after_visit(terms: Terms, share: Share) -> Terms:
    """What remains of the deductible and out-of-pocket maximum once a visit is paid."""
    covered = share.patient - share.not_covered
    return replace(
        terms,
        deductible_remaining=max(terms.deductible_remaining - share.deductible, 0),
        oop_remaining=max(terms.oop_remaining - covered, 0),
    )


def course_shares(visits: Iterable[Sequence[Line]], terms: Terms) -> list[Share]:
    """Visit by visit, each consuming the deductible and OOP left by the ones before it."""
    out = []
    for lines in visits:
        s = visit_share(lines, terms)
        out.append(s)
        terms = after_visit(terms, s)
    return out


# ---- business days and GFE deadlines ---------------------------------------------------------------


@lru_cache(maxsize=64)
def _federal(year: int) -> frozenset[date]:
    return frozenset(holidays.US(years=year, observed=True).keys())


def is_business_day(day: date, closed: frozenset[date] | set[date] = frozenset()) -> bool:
    """Monday to Friday, not a US federal holiday (as observed), not a day the clinic is closed."""
    return day.weekday() < 5 and day not in _federal(day.year) and day not in closed


def add_business_days(start: date, n: int, closed: frozenset[date] | set[date] = frozenset()) -> date:
    """The n-th business day after `start` (n >= 1); n = 0 is `start` itself."""
    day = start
    while n > 0:
        day += timedelta(days=1)
        if is_business_day(day, closed):
            n -= 1
    return day


def business_day_before(day: date, closed: frozenset[date] | set[date] = frozenset()) -> date:
    d = day - timedelta(days=1)
    while not is_business_day(d, closed):
        d -= timedelta(days=1)
    return d


def business_days_between(start: date, end: date, closed: frozenset[date] | set[date] = frozenset()) -> int:
    """Business days after `start` up to and including `end`."""
    n, d = 0, start
    while d < end:
        d += timedelta(days=1)
        if is_business_day(d, closed):
            n += 1
    return n


def gfe_due(
    *, scheduled_on: date, service_on: date | None, reason: str, closed: frozenset[date] | set[date] = frozenset()
) -> date | None:
    """When a Good Faith Estimate must reach the patient (45 CFR 149.610); None when none is required.

    scheduled >= 10 business days ahead: within 3 business days; >= 3: within 1; on request: within 3;
    a change of scope: at least 1 business day before the service.
    """
    if reason == "request":
        return add_business_days(scheduled_on, 3, closed)
    if service_on is None:
        return None
    if reason == "scope_change":
        before = business_day_before(service_on, closed)
        return max(before, scheduled_on)
    ahead = business_days_between(scheduled_on, service_on, closed)
    if ahead >= 10:
        return add_business_days(scheduled_on, 3, closed)
    if ahead >= 3:
        return add_business_days(scheduled_on, 1, closed)
    return None


def deadline_state(due_on: date | None, today: date) -> str:
    """'late', 'due_today', 'due' or 'none' (no legal deadline)."""
    if due_on is None:
        return "none"
    if due_on < today:
        return "late"
    return "due_today" if due_on == today else "due"


# ---- charges from session facts --------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFacts:
    dose_mg: float | None = None  # esketamine: the sum of the devices given
    infusion_minutes: int | None = None
    therapy_minutes: int | None = None


def esketamine_code(dose_mg: float, billing: Billing) -> str:
    """G2082 up to 56 mg, G2083 over 56 mg (drug and 2 h observation bundled)."""
    return billing.over_56 if dose_mg > 56 else billing.up_to_56


def infusion_lines(minutes: int, billing: Billing) -> list[tuple[str, int]]:
    """96374 for 15 min or less; 96365 for the first hour (16-90 min); +96366 per additional hour when the extra time exceeds 30 min."""
    if minutes <= 0:
        return []
    if minutes <= 15:
        return [(billing.short_push, 1)]
    out = [(billing.first, 1)]
    extra = minutes - 60
    if extra > 30:
        hours = extra // 60 + (1 if extra % 60 > 30 else 0)
        out.append((billing.additional_hour, hours))
    return out


def therapy_code(minutes: int) -> str | None:
    """90832 (16-37 min), 90834 (38-52), 90837 (53+)."""
    if minutes >= 53:
        return "90837"
    if minutes >= 38:
        return "90834"
    if minutes >= 16:
        return "90832"
    return None


def em_code(minutes: int) -> str | None:
    """Office visit by total time: 99212 (10+), 99213 (20+), 99214 (30+), 99215 (40+)."""
    for floor, code in ((40, "99215"), (30, "99214"), (20, "99213"), (10, "99212")):
        if minutes >= floor:
            return code
    return None


def charge_lines(billing: Billing, facts: SessionFacts) -> list[tuple[str, int]]:
    """(code, units) for a session, by the protocol's billing rule; nothing when the facts needed are missing."""
    rule = billing.rule
    if rule == "esketamine":
        return [(esketamine_code(facts.dose_mg, billing), 1)] if facts.dose_mg else []
    if rule == "infusion":
        return infusion_lines(facts.infusion_minutes or 0, billing)
    if rule in ("therapy_minutes", "kap"):
        code = therapy_code(facts.therapy_minutes or 0)
        return [(code, 1)] if code else []
    if rule == "em_minutes":
        code = em_code(facts.therapy_minutes or 0)
        return [(code, 1)] if code else []
    return []


def expected_lines(protocol: Protocol, planned_dose_mg: int | None) -> list[tuple[str, int]]:
    """What a booked session is expected to bill, for estimates made before it happens."""
    billing = protocol.billing
    if billing.rule == "esketamine":
        return charge_lines(billing, SessionFacts(dose_mg=planned_dose_mg or 56))
    if billing.rule == "infusion":
        return charge_lines(billing, SessionFacts(infusion_minutes=protocol.infusion_minutes))
    if billing.rule in ("therapy_minutes", "kap", "em_minutes"):
        return charge_lines(billing, SessionFacts(therapy_minutes=protocol.session_minutes))
    return []


# ---- GFE overage -----------------------------------------------------------------------------------


def overage(estimated: Mapping[str, int], billed: Mapping[str, int]) -> dict[str, int]:
    """Providers whose billed total exceeds their GFE total by $400 or more: {provider: amount over}."""
    out = {}
    for provider, total in billed.items():
        over = total - estimated.get(provider, 0)
        if over >= GFE_DISPUTE_THRESHOLD_CENTS:
            out[provider] = over
    return out


# ---- claims ----------------------------------------------------------------------------------------

CLAIM_NEXT: dict[str, tuple[str, ...]] = {
    "draft": ("submitted", "closed"),
    "submitted": ("paid", "partially_paid", "denied"),
    "paid": ("patient_balance", "closed"),
    "partially_paid": ("patient_balance", "closed"),
    "denied": ("submitted", "patient_balance", "closed"),
    "patient_balance": ("closed",),
    "closed": (),
}


def check_claim_move(current: str, new: str) -> None:
    if new not in CLAIM_NEXT.get(current, ()):
        allowed = ", ".join(s.replace("_", " ") for s in CLAIM_NEXT.get(current, ())) or "nothing (it is closed)"
        raise RuleBroken(f"A claim that is {current.replace('_', ' ')} can move to {allowed}, not {new.replace('_', ' ')}.", field="status")


# ---- what a message may say ------------------------------------------------------------------------

# words that would tell a reader of a patient's mailbox what they are treated with
# (?<![\d.]): a dose is matched from the start of its number only; otherwise a long run of digits costs quadratic time
DRUG_WORDS = re.compile(r"ketamine|spravato|ketalar|\bj0013\b|(?<![\d.])\d+(?:\.\d+)?\s*(?:mg|milligram)", re.IGNORECASE)


def plain_instructions(lines: Iterable[str]) -> list[str]:
    """Protocol instructions safe for a message: any line naming a drug or a dose is left out."""
    return [str(line) for line in lines if not DRUG_WORDS.search(str(line))]
