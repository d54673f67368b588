"""The service's stats: the human stats line."""

from livedenoise.stream.stats import NO_INPUT_HINT_S, ServiceStats, stats_line


def test_the_stats_line_asks_about_the_input_only_while_nothing_has_arrived():
    s = ServiceStats().snapshot()
    assert "no frames in" not in stats_line(s)  # just started
    s["uptime_s"] = NO_INPUT_HINT_S + 1
    assert "no frames in 11 s" in stats_line(s) and "--input" in stats_line(s)
    s["frames_in"] = 1
    assert "no frames in" not in stats_line(s)
    s["frames_in"], s["malformed"] = 0, 3  # something arrives, it is just not valid: the line counts that instead
    assert "no frames in" not in stats_line(s)
