"""Admin pages: staff, tokens, audit trail."""

routes: list = []
