"""scheduling tables and changes

Revision ID: 0002
Revises: 0001
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0002"
down_revision: Union[str, None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # staffing lookups for a clinic and a date range (availability, capacity checks)
    op.create_index("ix_shifts_clinic_starts", "shifts", ["clinic_id", "starts_at"], unique=False)
    # one person is never on two overlapping shifts (no btree_gist: ids as single-point ranges)
    op.execute(
        """
        ALTER TABLE shifts ADD CONSTRAINT ex_shifts_user_overlap
        EXCLUDE USING gist (
            int8range(user_id, user_id, '[]') WITH &&,
            tstzrange(starts_at, ends_at) WITH &&
        )
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE shifts DROP CONSTRAINT IF EXISTS ex_shifts_user_overlap")
    op.drop_index("ix_shifts_clinic_starts", table_name="shifts")
