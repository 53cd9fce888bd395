"""Text files in another encoding fail naming the file, the line and the byte."""
import pytest

from ppufo.utils.errors import ConfigError, DataError
from ppufo.utils.textfile import read_text, text_lines


def test_lines_as_a_text_mode_file_gives_them(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes("\ufeffa 1\r\nb\u00e9 2\rc 3\n\nd 4".encode("utf-8"))
    assert list(text_lines(str(path))) == [(1, "a 1\n"), (2, "b\u00e9 2\n"), (3, "c 3\n"), (4, "\n"), (5, "d 4")]
    assert read_text(str(path)) == "a 1\r\nb\u00e9 2\rc 3\n\nd 4"  # the byte-order mark dropped


@pytest.mark.parametrize("error", [DataError, ConfigError])
def test_a_bad_byte_names_file_line_and_place(tmp_path, error):
    path = tmp_path / "latin1.txt"
    path.write_bytes("img/0001.jpg 1\nimg/\u00e9t\u00e9.jpg 2\n".encode("latin-1"))
    with pytest.raises(error) as e:
        list(text_lines(str(path), error))
    assert str(e.value).startswith(f"{path}:2: not UTF-8 text (byte 0xe9 at byte 5 of the line")
    assert "iconv" in str(e.value)


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_text(str(tmp_path / "nowhere.txt"))
