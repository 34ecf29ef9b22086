import pytest


@pytest.fixture(scope="session")
def tiny_trio(tmp_path_factory):
    """A trio of tiny random transformers models (real code paths, seconds to build)."""
    from tests.tiny_models import tiny_trio as build

    return build(tmp_path_factory.mktemp("tiny-models"))
