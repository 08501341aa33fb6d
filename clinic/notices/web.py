"""notices HTML routes."""

routes: list = []
