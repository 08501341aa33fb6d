"""monitoring HTML routes."""

routes: list = []
