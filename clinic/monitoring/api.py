"""monitoring JSON routes."""

routes: list = []
