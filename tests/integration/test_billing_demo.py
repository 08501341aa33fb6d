"""The demo seed gives billing staff something real to look at."""

from __future__ import annotations

from sqlalchemy import text

from clinic.seed import seed_demo


async def test_demo_seed_has_dated_fees_mixed_coverage_estimates_and_claims(db):
    clinic = await seed_demo(db, patients=24, days=7)
    async with db.sessionmaker() as s:
        q = lambda sql: s.execute(text(sql), {"c": clinic.id})  # noqa: E731
        fees = (await q("SELECT count(*) FILTER (WHERE effective_to IS NULL), count(*) FILTER (WHERE effective_to IS NOT NULL)"
                        " FROM fee_schedule WHERE clinic_id = :c")).one()
        codes = set((await q("SELECT code FROM fee_schedule WHERE clinic_id = :c")).scalars())
        kinds = dict((await q("SELECT kind, count(*) FROM coverages WHERE clinic_id = :c GROUP BY kind")).all())
        estimates = dict((await q("SELECT issued_at IS NOT NULL, count(*) FROM estimates WHERE clinic_id = :c GROUP BY 1")).all())
        claims = set((await q("SELECT status FROM claims WHERE clinic_id = :c")).scalars())
        charges = (await q("SELECT count(*) FROM charges WHERE clinic_id = :c")).scalar_one()
    assert fees[0] >= 15 and fees[1] >= 15  # this year's prices, and last year's kept
    assert {"G2082", "G2083", "96365", "96366", "96374", "90832", "90834", "90837"} <= codes
    assert kinds.get("insured") and kinds.get("self_pay")
    assert estimates.get(True) and estimates.get(False)
    assert charges > 0 and {"draft", "submitted", "paid", "denied"} <= claims
