"""notices JSON routes."""

routes: list = []
