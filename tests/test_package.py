import codecs
import importlib


def test_stdlib_codecs_not_shadowed():
    # The top-level folder is named codecs/ but must never hide the standard library's codecs.
    assert hasattr(codecs, "lookup")
    assert codecs.lookup("utf-8").name == "utf-8"


def test_namespace_packages_import():
    for name in ("madpipe.codecs", "madpipe.pipeline"):
        assert importlib.import_module(name).__name__ == name


def test_top_level_help_lists_every_command_with_examples(capsys):
    import pytest

    from madpipe.pipeline.cli import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMANDS)
    assert "examples:" in out and "madpipe snoop -r pcaps/" in out
