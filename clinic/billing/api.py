"""billing JSON routes."""

routes: list = []
