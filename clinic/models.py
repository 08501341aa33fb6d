"""Every table model, imported once so metadata (and Alembic) sees the whole schema."""

from clinic.audit.models import AuditEvent  # noqa: F401
from clinic.auth.models import ApiToken, LoginAttempt, StaffUser, WebSession  # noqa: F401
from clinic.billing import models as billing_models  # noqa: F401
from clinic.clinics import Clinic, ClosedDate  # noqa: F401
from clinic.monitoring import models as monitoring_models  # noqa: F401
from clinic.notices.models import Notice  # noqa: F401
from clinic.outcomes import models as outcomes_models  # noqa: F401
from clinic.patients.models import Patient  # noqa: F401
from clinic.scheduling.models import (  # noqa: F401
    Appointment,
    Chair,
    Course,
    ScheduleChange,
    SessionType,
    Shift,
)
