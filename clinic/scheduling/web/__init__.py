"""Front-desk pages by module: the day and week views, the booking flow and an appointment's page, courses, and the
clinic-setup admin pages."""

from clinic.scheduling.web import admin, booking, calendar, courses

routes = [*calendar.routes, *booking.routes, *courses.routes, *admin.routes]
