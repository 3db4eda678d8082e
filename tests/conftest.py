"""The suite's shared fixtures come from the `tests.support` package, loaded here as pytest plugins."""

pytest_plugins = ["tests.support.kafka", "tests.support.emulator", "tests.support.registry"]
