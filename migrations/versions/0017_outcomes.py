"""Outcome measures: completed questionnaires (append-only), safety reviews of PHQ-9 item 9, baseline waivers, questionnaire
drafts, the patient's own time zone, and questionnaire links among the DOB-gated patient links

Revision ID: 0017
Revises: 0018
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: Union[str, None] = "0018"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

APPEND_ONLY = ("outcome_measures", "baseline_waivers")


def upgrade() -> None:
    op.create_table('baseline_waivers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('waived_by', sa.Integer(), nullable=False),
    sa.Column('waived_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('length(reason) > 0', name='has_reason'),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['waived_by'], ['staff_users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('appointment_id')
    )
    op.create_index(op.f('ix_baseline_waivers_patient_id'), 'baseline_waivers', ['patient_id'], unique=False)
    op.create_table('outcome_measures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=True),
    sa.Column('instrument', sa.String(length=8), nullable=False),
    sa.Column('version', sa.String(length=40), nullable=False),
    sa.Column('answers', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_by', sa.String(length=8), nullable=False),
    sa.Column('completed_by_user_id', sa.Integer(), nullable=True),
    sa.Column('via', sa.String(length=8), nullable=False),
    sa.Column('link_id', sa.Integer(), nullable=True),
    sa.Column('client_id', sa.Uuid(), nullable=False),
    sa.Column('recorded_by', sa.Integer(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('correction_reason', sa.String(length=500), nullable=True),
    sa.Column('entered_in_error', sa.Boolean(), nullable=False),
    sa.CheckConstraint("(completed_by = 'staff') = (completed_by_user_id IS NOT NULL)", name='staff_named'),
    sa.CheckConstraint("(instrument = 'phq9' AND total BETWEEN 0 AND 27) OR (instrument = 'gad7' AND total BETWEEN 0 AND 21) OR (instrument = 'asrs' AND total BETWEEN 0 AND 72)", name='total_in_range'),
    sa.CheckConstraint("completed_by IN ('patient','staff')", name='completed_by_known'),
    sa.CheckConstraint("instrument IN ('phq9','gad7','asrs')", name='instrument_known'),
    sa.CheckConstraint("via = 'staff' OR link_id IS NOT NULL", name='link_named'),
    sa.CheckConstraint("via IN ('link','kiosk','staff')", name='via_known'),
    sa.CheckConstraint('(supersedes_id IS NULL AND correction_reason IS NULL AND NOT entered_in_error) OR (supersedes_id IS NOT NULL AND length(correction_reason) > 0)', name='correction_has_reason'),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['completed_by_user_id'], ['staff_users.id'], ),
    sa.ForeignKeyConstraint(['link_id'], ['cost_links.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['recorded_by'], ['staff_users.id'], ),
    sa.ForeignKeyConstraint(['supersedes_id'], ['outcome_measures.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id'),
    sa.UniqueConstraint('supersedes_id')
    )
    op.create_index(op.f('ix_outcome_measures_appointment_id'), 'outcome_measures', ['appointment_id'], unique=False)
    op.create_index(op.f('ix_outcome_measures_clinic_id'), 'outcome_measures', ['clinic_id'], unique=False)
    op.create_index('ix_outcome_measures_patient_completed', 'outcome_measures', ['patient_id', 'completed_at'], unique=False)
    op.create_index('uq_outcome_measures_link_instrument', 'outcome_measures', ['link_id', 'instrument'], unique=True, postgresql_where=sa.text('link_id IS NOT NULL AND supersedes_id IS NULL'))
    op.create_table('questionnaire_drafts',
    sa.Column('link_id', sa.Integer(), nullable=False),
    sa.Column('instrument', sa.String(length=8), nullable=False),
    sa.Column('answers', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['link_id'], ['cost_links.id'], ),
    sa.PrimaryKeyConstraint('link_id', 'instrument')
    )
    op.create_table('safety_reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('measure_id', sa.Integer(), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reviewed_by', sa.Integer(), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('risk_level', sa.String(length=10), nullable=True),
    sa.Column('action_taken', sa.Text(), nullable=True),
    sa.Column('safety_plan', sa.Boolean(), nullable=True),
    sa.CheckConstraint("(reviewed_at IS NULL AND reviewed_by IS NULL AND risk_level IS NULL AND action_taken IS NULL AND safety_plan IS NULL) OR (reviewed_at IS NOT NULL AND reviewed_by IS NOT NULL AND risk_level IN ('low','moderate','high') AND length(action_taken) > 0 AND safety_plan IS NOT NULL)", name='reviewed_completely'),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['measure_id'], ['outcome_measures.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['reviewed_by'], ['staff_users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('measure_id')
    )
    op.create_index('ix_safety_reviews_open', 'safety_reviews', ['clinic_id', 'patient_id'], unique=False, postgresql_where=sa.text('reviewed_at IS NULL'))
    op.create_index(op.f('ix_safety_reviews_patient_id'), 'safety_reviews', ['patient_id'], unique=False)
    op.add_column('patients', sa.Column('time_zone', sa.String(length=64), nullable=True))
    op.drop_constraint(op.f('ck_cost_links_kind_known'), 'cost_links', type_='check')
    op.alter_column('cost_links', 'kind', type_=sa.String(length=16), existing_nullable=False)
    op.create_check_constraint('kind_known', 'cost_links', "kind IN ('visit','estimate','balance','questionnaire','kiosk')")

    # answers are never changed or removed: a correction is a new, superseding row (the function comes from 0003)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION monitoring_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION monitoring_append_only()"
        )
    # a safety review is kept for good; the only change allowed is the prescriber's review, once
    op.execute(
        """
        CREATE FUNCTION safety_reviews_review_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'safety_reviews rows are kept: DELETE refused' USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF OLD.reviewed_at IS NOT NULL
               OR (NEW.id, NEW.clinic_id, NEW.patient_id, NEW.measure_id, NEW.raised_at)
                  IS DISTINCT FROM (OLD.id, OLD.clinic_id, OLD.patient_id, OLD.measure_id, OLD.raised_at)
            THEN
                RAISE EXCEPTION 'safety_reviews: only the review may be added, once' USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER safety_reviews_review_once BEFORE UPDATE OR DELETE ON safety_reviews "
        "FOR EACH ROW EXECUTE FUNCTION safety_reviews_review_once()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS safety_reviews_review_once ON safety_reviews")
    op.execute("DROP FUNCTION IF EXISTS safety_reviews_review_once()")
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}")
    op.drop_column('patients', 'time_zone')
    op.drop_index(op.f('ix_safety_reviews_patient_id'), table_name='safety_reviews')
    op.drop_index('ix_safety_reviews_open', table_name='safety_reviews', postgresql_where=sa.text('reviewed_at IS NULL'))
    op.drop_table('safety_reviews')
    op.drop_table('questionnaire_drafts')
    op.drop_index('uq_outcome_measures_link_instrument', table_name='outcome_measures', postgresql_where=sa.text('link_id IS NOT NULL AND supersedes_id IS NULL'))
    op.drop_index('ix_outcome_measures_patient_completed', table_name='outcome_measures')
    op.drop_index(op.f('ix_outcome_measures_clinic_id'), table_name='outcome_measures')
    op.drop_index(op.f('ix_outcome_measures_appointment_id'), table_name='outcome_measures')
    op.drop_table('outcome_measures')
    op.drop_index(op.f('ix_baseline_waivers_patient_id'), table_name='baseline_waivers')
    op.drop_table('baseline_waivers')
    op.execute("DELETE FROM cost_links WHERE kind IN ('questionnaire','kiosk')")
    op.drop_constraint(op.f('ck_cost_links_kind_known'), 'cost_links', type_='check')
    op.alter_column('cost_links', 'kind', type_=sa.String(length=10), existing_nullable=False)
    op.create_check_constraint('kind_known', 'cost_links', "kind IN ('visit','estimate','balance')")
