"""The test suite: fixtures in ``conftest.py`` files, the helpers tests import in ``tests/helpers/``."""

import pytest

# Before any helper is imported: a failed ``assert`` in a helper explains itself as a test's does.
pytest.register_assert_rewrite("tests.helpers")
