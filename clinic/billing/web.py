"""billing HTML routes."""

routes: list = []
