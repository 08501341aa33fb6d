"""The access matrix says what the clinic's roles mean (issue: who books, who runs sessions, who signs, who bills)."""

from __future__ import annotations

from clinic.auth.permissions import ALL_ROLES, PERMISSIONS, allows


def holders(permission: str) -> set[str]:
    return {role for role in ALL_ROLES if allows(permission, [role])}


def test_front_desk_books_and_edits_patients():
    assert "front_desk" in holders("patients.write") and "front_desk" in holders("schedule.write")
    assert holders("patients.write") <= {"front_desk", "admin"}
    assert not {"nurse", "prescriber", "billing"} & holders("schedule.write")


def test_nurses_and_prescribers_run_sessions_and_only_prescribers_sign():
    assert holders("session.run") == {"nurse", "prescriber"}
    assert holders("session.sign") == {"prescriber"}


def test_billing_sees_billing_and_clinical_roles_do_not():
    assert "billing" in holders("billing.read") and holders("billing.write") == {"billing"}
    assert not {"nurse", "prescriber", "front_desk"} & holders("billing.read")


def test_only_admin_manages_staff_and_reads_the_audit_trail():
    assert holders("admin") == {"admin"}
    assert holders("audit.read") == {"admin"}


def test_every_role_can_reach_its_own_account():
    assert holders("staff") == set(ALL_ROLES)


def test_unknown_permission_and_unknown_role_are_refused():
    assert not allows("no.such.permission", list(ALL_ROLES))
    assert not allows("staff", ["superuser"])
    assert not allows("staff", [])


def test_matrix_names_only_real_roles():
    for permission, roles in PERMISSIONS.items():
        assert roles <= ALL_ROLES, permission
        assert roles, permission


def test_integrations_read_but_never_run_sign_book_nor_manage():
    for permission in ("session.run", "session.sign", "schedule.write", "patients.write", "billing.write", "coverage.write",
                       "admin", "audit.read", "board.read"):
        assert "integration" not in holders(permission), permission
    assert {"patients.read", "schedule.read", "session.read", "billing.read"} <= {p for p in PERMISSIONS if "integration" in holders(p)}
