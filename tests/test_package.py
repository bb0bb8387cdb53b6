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


def test_unwritable_output_is_one_line_for_every_command(tmp_path, capsys):
    from pathlib import Path

    from madpipe.pipeline.cli import main

    cap = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions.pcap")
    missing = tmp_path / "no" / "such" / "folder"
    for argv in (["report", cap, "-w", str(missing / "r.html")],
                 ["decode", "-r", cap, "-T", "csv", "-w", str(missing / "x.csv")],
                 ["craft", "--method", "get", "--attr", "node-info", "-L", "4", "-w", str(missing / "x.pcap")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "No such file or directory" in err, argv
        assert "Traceback" not in err
