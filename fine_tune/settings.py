"""Settings: the parsed flags of one command, read-only.

Entry scripts parse their flags once (fine_tune.cli) and hand the library a Settings;
library code reads it and never changes it. Values a command derives (a teacher's
max_seq_len for its student, the device a left-out --device_id resolves to) go into a
new Settings made by `derive`, which is also what config.json records.
"""
from types import SimpleNamespace


class Settings(SimpleNamespace):
    def __setattr__(self, name, value):
        raise AttributeError(f"settings are read-only (tried to set {name}); derive a copy with "
                             "fine_tune.settings.derive")

    def __delattr__(self, name):
        raise AttributeError(f"settings are read-only (tried to delete {name})")


def derive(settings, **values) -> Settings:
    """A copy of `settings` (Settings or an argparse Namespace) with `values` set."""
    return Settings(**(vars(settings) | values))
