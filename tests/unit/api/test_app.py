"""Settings of the HTTP app that no short test could otherwise catch."""

from hydra.api.app import create_app
from hydra.models.catalog import load_catalog


def test_streams_are_not_cut_off_by_a_response_timeout():
    """Quart's default RESPONSE_TIMEOUT (60 s) silently ends any stream that lasts longer:
    a long generation would lose its final chunk and [DONE]."""
    app = create_app(dht=None, status=dict, catalog=load_catalog())  # type: ignore[arg-type]
    assert app.config["RESPONSE_TIMEOUT"] is None
