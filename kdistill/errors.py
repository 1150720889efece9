"""The one exception kdistill raises for bad input, so the CLI can print it as one line."""


class KDistillError(ValueError):
    """Bad input (config, data, model, checkpoint): the message says what and how to fix it."""
