"""audit_events records the credential each event was done with (browser session or API token); ending a browser
session announces itself on clinic_sign_ins, so open live streams stop at once

Revision ID: 0018
Revises: 0006
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0018"
down_revision: Union[str, None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # session | bearer | system; the web_sessions or api_tokens id
    op.add_column("audit_events", sa.Column("via", sa.String(length=10), nullable=True))
    op.add_column("audit_events", sa.Column("credential_id", sa.Integer(), nullable=True))
    # the function from 0006; sign-out, password reset and idle logoff set ended_at
    op.execute(
        "CREATE TRIGGER web_sessions_sign_ins AFTER UPDATE OF ended_at OR DELETE OR TRUNCATE ON web_sessions"
        " FOR EACH STATEMENT EXECUTE FUNCTION clinic_sign_ins_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS web_sessions_sign_ins ON web_sessions")
    op.drop_column("audit_events", "credential_id")
    op.drop_column("audit_events", "via")
