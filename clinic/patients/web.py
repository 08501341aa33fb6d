"""patients HTML routes."""

routes: list = []
