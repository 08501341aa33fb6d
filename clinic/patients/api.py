"""patients JSON routes."""

routes: list = []
