"""print_and_save: the scripts' tables are printed, and written with a final newline when asked."""

from pdegrow.text_output import print_and_save


def test_print_and_save(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert print_and_save(["| a |", "|---|"], out) == "| a |\n|---|"
    assert out.read_text() == "| a |\n|---|\n"
    assert capsys.readouterr().out == "| a |\n|---|\n"
    print_and_save(["x"])
    assert capsys.readouterr().out == "x\n"
