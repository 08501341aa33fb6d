"""Scheduling use cases, one transaction each, by module: the request's lookups (lookups.py), availability, booking one
session (book, move, cancel, no-show), listing appointments, and courses."""

from clinic.scheduling.service.appointments import AppointmentRow, get_appointment, list_appointments
from clinic.scheduling.service.availability import Availability, candidate_out, count_live_between, find_availability
from clinic.scheduling.service.booking import book, cancel, move, no_show
from clinic.scheduling.service.courses import CoursePlan, book_course, cancel_course, get_course, move_course, plan_out
from clinic.scheduling.service.lookups import calendar_of, chairs, patient_of, session_type_of, session_types

__all__ = [
    "AppointmentRow",
    "Availability",
    "CoursePlan",
    "book",
    "book_course",
    "calendar_of",
    "cancel",
    "cancel_course",
    "candidate_out",
    "chairs",
    "count_live_between",
    "find_availability",
    "get_appointment",
    "get_course",
    "list_appointments",
    "move",
    "move_course",
    "no_show",
    "patient_of",
    "plan_out",
    "session_type_of",
    "session_types",
]
