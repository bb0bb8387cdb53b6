"""``python -m madpipe.pipeline.cli``: the ``madpipe`` command."""
from madpipe.pipeline.cli.main import entry

entry()
