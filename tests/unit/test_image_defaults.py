"""An image's STOPSIGNAL and HEALTHCHECK apply unless the run flags say otherwise."""

from capsa.engine.containers import image_defaults
from capsa.engine.options import RunOptions


def test_image_stop_signal_and_healthcheck_are_defaults():
    options = RunOptions(image="x")
    image_defaults(options, {"StopSignal": "SIGQUIT", "Healthcheck": {
        "Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000, "Retries": 4}})  # fmt: skip
    assert (options.stop_signal, options.health_cmd, options.health_interval, options.health_retries) == \
        ("SIGQUIT", "true", 2.0, 4)


def test_flags_win():
    flagged = RunOptions(image="x", stop_signal="SIGINT", no_healthcheck=True)
    image_defaults(flagged, {"StopSignal": "SIGQUIT", "Healthcheck": {"Test": ["CMD", "true"]}})
    assert (flagged.stop_signal, flagged.health_cmd) == ("SIGINT", None)
    exec_form = RunOptions(image="x")
    image_defaults(exec_form, {"Healthcheck": {"Test": ["CMD", "test", "-e", "/ok"]}})
    assert exec_form.health_cmd == ["test", "-e", "/ok"]
