"""scheduling HTML routes."""

routes: list = []
