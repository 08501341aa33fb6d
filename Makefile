# Shortcuts for the documented commands; each is one line you can also type yourself.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: bench bench-quick e2e

# every benchmark in bench/, one table, bench/results.json (under 10 minutes on 2 cores)
bench:
	$(PYTHON) -m bench

# the same at small sizes: a smoke run whose figures do not count
bench-quick:
	$(PYTHON) -m bench --quick

# the browser tests alone (screenshots in tests/e2e/artifacts/)
e2e:
	$(PYTHON) -m pytest tests/e2e
