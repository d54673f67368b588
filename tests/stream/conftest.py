import pytest
from streamkit import endpoints, lite_card

from livedenoise.stream.service import ServeConfig


@pytest.fixture
def cfg_factory():
    def make(**kw) -> ServeConfig:
        i, o = endpoints()
        base = dict(input=i, output=o, stats_interval=0.2)
        base.update(kw)
        return ServeConfig(**base)

    return make


@pytest.fixture
def card():
    return lite_card(2, 0)


