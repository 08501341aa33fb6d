"""scheduling JSON routes."""

routes: list = []
