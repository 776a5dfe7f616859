# The matrix plugin: `pytest -n auto` here runs matrix.yaml (see harness/pytest_plugin.py).
pytest_plugins = ["harness.pytest_plugin"]
