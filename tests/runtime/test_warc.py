"""webtext.runtime.warc fails loudly on a warcio without the internals its damage checks read."""

import io
from importlib.metadata import version

import pytest

from webtext.runtime import warc


@pytest.fixture(autouse=True)
def fresh_check():
    warc.check_warcio.cache_clear()
    yield
    warc.check_warcio.cache_clear()


def test_the_installed_warcio_has_what_the_damage_checks_read():
    warc.check_warcio()


def test_a_warcio_without_them_stops_the_first_read_naming_its_version(monkeypatch):
    class Moved(warc._CheckedIterator):  # a warcio whose iterator keeps its reader elsewhere
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._reader = self.__dict__.pop("reader")

    monkeypatch.setattr(warc, "_CheckedIterator", Moved)
    expected = rf"warcio {version('warcio')} has no ArchiveIterator\.reader\.decompressor"
    with pytest.raises(RuntimeError, match=expected):
        warc.check_warcio()
    data = warc.encode_exchange("http://example.com/", request_headers=[], status=200, reason="OK",
                                response_headers=[], body=b"<html></html>").data
    with pytest.raises(RuntimeError, match=expected):  # not a WarcReadError: the stage stops, no file is "damaged"
        list(warc.iter_responses(io.BytesIO(data), "x.warc.gz"))
