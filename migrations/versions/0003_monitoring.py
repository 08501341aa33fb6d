"""monitoring: clinical entries, dosing entries, alerts, REMS monitoring forms

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: Union[str, None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

APPEND_ONLY = ("clinical_entries", "dosing_entries")


def upgrade() -> None:
    op.create_table('clinical_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Uuid(), nullable=False),
    sa.Column('check_key', sa.String(length=40), nullable=True),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('systolic', sa.Integer(), nullable=True),
    sa.Column('diastolic', sa.Integer(), nullable=True),
    sa.Column('heart_rate', sa.Integer(), nullable=True),
    sa.Column('spo2', sa.Integer(), nullable=True),
    sa.Column('resp_rate', sa.Integer(), nullable=True),
    sa.Column('moaas', sa.Integer(), nullable=True),
    sa.Column('dissociation_form', sa.String(length=10), nullable=True),
    sa.Column('dissociation_items', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('dissociation_total', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('correction_reason', sa.String(length=300), nullable=True),
    sa.Column('entered_in_error', sa.Boolean(), nullable=False),
    sa.CheckConstraint("(dissociation_form IS NULL AND dissociation_total IS NULL AND dissociation_items IS NULL) OR (dissociation_form = 'cadss6' AND dissociation_total BETWEEN 0 AND 24 AND dissociation_items IS NOT NULL) OR (dissociation_form = 'cadss23' AND dissociation_total BETWEEN 0 AND 92 AND dissociation_items IS NOT NULL)", name='dissociation_form'),
    sa.CheckConstraint("entered_in_error OR systolic IS NOT NULL OR heart_rate IS NOT NULL OR spo2 IS NOT NULL OR resp_rate IS NOT NULL OR moaas IS NOT NULL OR dissociation_total IS NOT NULL OR length(coalesce(note, '')) > 0", name='records_something'),
    sa.CheckConstraint('(supersedes_id IS NULL AND correction_reason IS NULL AND NOT entered_in_error) OR (supersedes_id IS NOT NULL AND length(correction_reason) > 0)', name='correction_has_reason'),
    sa.CheckConstraint('(systolic IS NULL) = (diastolic IS NULL)', name='bp_pair'),
    sa.CheckConstraint('diastolic BETWEEN 20 AND 200 AND diastolic < systolic', name='diastolic_plausible'),
    sa.CheckConstraint('heart_rate BETWEEN 20 AND 250', name='heart_rate_plausible'),
    sa.CheckConstraint('moaas BETWEEN 0 AND 5', name='moaas_scale'),
    sa.CheckConstraint('resp_rate BETWEEN 4 AND 60', name='resp_rate_plausible'),
    sa.CheckConstraint('spo2 BETWEEN 50 AND 100', name='spo2_plausible'),
    sa.CheckConstraint('systolic BETWEEN 50 AND 300', name='systolic_plausible'),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['recorded_by'], ['staff_users.id'], ),
    sa.ForeignKeyConstraint(['supersedes_id'], ['clinical_entries.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id'),
    sa.UniqueConstraint('supersedes_id')
    )
    op.create_index('ix_clinical_entries_appointment_taken', 'clinical_entries', ['appointment_id', 'taken_at'], unique=False)
    op.create_index(op.f('ix_clinical_entries_clinic_id'), 'clinical_entries', ['clinic_id'], unique=False)
    op.create_table('dosing_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('device_number', sa.Integer(), nullable=True),
    sa.Column('dose_mg', sa.Numeric(precision=7, scale=1), nullable=True),
    sa.Column('lot_number', sa.String(length=40), nullable=True),
    sa.Column('mg_per_kg', sa.Numeric(precision=4, scale=2), nullable=True),
    sa.Column('weight_kg', sa.Numeric(precision=5, scale=1), nullable=True),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('correction_reason', sa.String(length=300), nullable=True),
    sa.Column('entered_in_error', sa.Boolean(), nullable=False),
    sa.CheckConstraint("kind <> 'device' OR (device_number BETWEEN 1 AND 3 AND dose_mg > 0 AND length(lot_number) > 0)", name='device_complete'),
    sa.CheckConstraint("kind <> 'infusion_start' OR (dose_mg > 0 AND mg_per_kg > 0 AND weight_kg BETWEEN 25 AND 350)", name='infusion_dose_complete'),
    sa.CheckConstraint("kind IN ('device','infusion_start','infusion_end','dose')", name='kind_known'),
    sa.CheckConstraint("kind <> 'dose' OR dose_mg > 0", name='dose_complete'),
    sa.CheckConstraint('(supersedes_id IS NULL AND correction_reason IS NULL AND NOT entered_in_error) OR (supersedes_id IS NOT NULL AND length(correction_reason) > 0)', name='correction_has_reason'),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['recorded_by'], ['staff_users.id'], ),
    sa.ForeignKeyConstraint(['supersedes_id'], ['dosing_entries.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_id'),
    sa.UniqueConstraint('supersedes_id')
    )
    op.create_index('ix_dosing_entries_appointment_taken', 'dosing_entries', ['appointment_id', 'taken_at'], unique=False)
    op.create_index(op.f('ix_dosing_entries_clinic_id'), 'dosing_entries', ['clinic_id'], unique=False)
    op.create_table('rems_monitoring_forms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.Integer(), nullable=False),
    sa.Column('session_date', sa.Date(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('submitted_on', sa.Date(), nullable=True),
    sa.Column('confirmation', sa.String(length=80), nullable=True),
    sa.Column('submission_recorded_by', sa.Integer(), nullable=True),
    sa.Column('submission_recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(submitted_on IS NULL) = (confirmation IS NULL)', name='submission_complete'),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['patient_id'], ['patients.id'], ),
    sa.ForeignKeyConstraint(['submission_recorded_by'], ['staff_users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('appointment_id')
    )
    op.create_index(op.f('ix_rems_monitoring_forms_clinic_id'), 'rems_monitoring_forms', ['clinic_id'], unique=False)
    op.create_index('ix_rems_monitoring_forms_due', 'rems_monitoring_forms', ['clinic_id', 'due_on'], unique=False, postgresql_where=sa.text('submitted_on IS NULL'))
    op.create_index(op.f('ix_rems_monitoring_forms_patient_id'), 'rems_monitoring_forms', ['patient_id'], unique=False)
    op.create_table('session_alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinic_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=True),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('message', sa.String(length=300), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_by', sa.Integer(), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('note', sa.String(length=500), nullable=True),
    sa.CheckConstraint("level IN ('caution','alert','urgent')", name='level_known'),
    sa.CheckConstraint('(acknowledged_at IS NULL AND acknowledged_by IS NULL AND note IS NULL) OR (acknowledged_at IS NOT NULL AND acknowledged_by IS NOT NULL AND length(note) > 0)', name='acknowledged_with_note'),
    sa.ForeignKeyConstraint(['acknowledged_by'], ['staff_users.id'], ),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], ),
    sa.ForeignKeyConstraint(['clinic_id'], ['clinics.id'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['clinical_entries.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_session_alerts_appointment_id'), 'session_alerts', ['appointment_id'], unique=False)
    op.create_index('ix_session_alerts_open', 'session_alerts', ['clinic_id', 'appointment_id'], unique=False, postgresql_where=sa.text('acknowledged_at IS NULL'))

    # Clinical entries are never changed or removed: a correction is a new, superseding row.
    op.execute(
        """
        CREATE FUNCTION monitoring_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused (add a correcting entry instead)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION monitoring_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION monitoring_append_only()"
        )
    # An alert is kept for good; the only change allowed is its first acknowledgement.
    op.execute(
        """
        CREATE FUNCTION session_alerts_acknowledge_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'session_alerts rows are kept: DELETE refused' USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF OLD.acknowledged_at IS NOT NULL
               OR (NEW.id, NEW.clinic_id, NEW.appointment_id, NEW.entry_id, NEW.level, NEW.code, NEW.message, NEW.raised_at)
                  IS DISTINCT FROM
                  (OLD.id, OLD.clinic_id, OLD.appointment_id, OLD.entry_id, OLD.level, OLD.code, OLD.message, OLD.raised_at)
            THEN
                RAISE EXCEPTION 'session_alerts: only a first acknowledgement may be added' USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER session_alerts_acknowledge_once BEFORE UPDATE OR DELETE ON session_alerts "
        "FOR EACH ROW EXECUTE FUNCTION session_alerts_acknowledge_once()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS session_alerts_acknowledge_once ON session_alerts")
    op.execute("DROP FUNCTION IF EXISTS session_alerts_acknowledge_once()")
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table}")
    op.execute("DROP FUNCTION IF EXISTS monitoring_append_only()")
    op.drop_index('ix_session_alerts_open', table_name='session_alerts', postgresql_where=sa.text('acknowledged_at IS NULL'))
    op.drop_index(op.f('ix_session_alerts_appointment_id'), table_name='session_alerts')
    op.drop_table('session_alerts')
    op.drop_index(op.f('ix_rems_monitoring_forms_patient_id'), table_name='rems_monitoring_forms')
    op.drop_index('ix_rems_monitoring_forms_due', table_name='rems_monitoring_forms', postgresql_where=sa.text('submitted_on IS NULL'))
    op.drop_index(op.f('ix_rems_monitoring_forms_clinic_id'), table_name='rems_monitoring_forms')
    op.drop_table('rems_monitoring_forms')
    op.drop_index(op.f('ix_dosing_entries_clinic_id'), table_name='dosing_entries')
    op.drop_index('ix_dosing_entries_appointment_taken', table_name='dosing_entries')
    op.drop_table('dosing_entries')
    op.drop_index(op.f('ix_clinical_entries_clinic_id'), table_name='clinical_entries')
    op.drop_index('ix_clinical_entries_appointment_taken', table_name='clinical_entries')
    op.drop_table('clinical_entries')
