"""NOTIFY clinic_sign_ins on every change that can end or narrow a token's sign-in (web processes that
remember sign-ins for a few seconds forget them at once)

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

WATCHED = {
    # table: the columns a sign-in depends on (UPDATE OF fires when the column is set, changed or not)
    "api_tokens": "revoked_at, user_id, token_hash",
    "staff_users": "active, roles, clinic_id, email, full_name",
}


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION clinic_sign_ins_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('clinic_sign_ins', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table, columns in WATCHED.items():
        op.execute(
            f"CREATE TRIGGER {table}_sign_ins AFTER UPDATE OF {columns} OR DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION clinic_sign_ins_changed()"
        )


def downgrade() -> None:
    for table in WATCHED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_sign_ins ON {table}")
    op.execute("DROP FUNCTION IF EXISTS clinic_sign_ins_changed()")
