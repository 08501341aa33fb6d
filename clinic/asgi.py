"""ASGI entry for `clinic serve` / uvicorn workers: settings from the environment."""

from clinic.app import create_app
from clinic.config import Settings

app = create_app(Settings.from_env())
