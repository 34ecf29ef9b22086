import pytest


@pytest.fixture(scope="session")
def tiny_trio(tmp_path_factory):
    """A trio of tiny random transformers models (real code paths, seconds to build)."""
    from tests.tiny_models import tiny_trio as build

    return build(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(autouse=True)
def _own_cache_dir(request, tmp_path_factory, monkeypatch):
    """Tests write restyled examples and conversions to a temporary cache, never the user's.

    The end-to-end tests on the real default models keep the real cache, so the one-time
    GGUF conversion is not redone for every run.
    """
    if request.node.get_closest_marker("real_models") is None:
        monkeypatch.setenv("OVERTON_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "overton-cache"))
