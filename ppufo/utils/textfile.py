"""Text files ppufo is given (dataset lists, label files, configs), read in one place: a file in
another encoding (a Latin-1 list, say) is an error naming the file, the line and the byte, not a
bare "'utf-8' codec can't decode" from deep inside a reader."""
import io

from .errors import DataError


def read_text(path, error=DataError, encoding="utf-8-sig"):
    """The text of ``path`` (a UTF-8 byte-order mark dropped). A bad byte raises ``error``
    naming ``path:line`` and the byte's place in the line; a missing file raises
    FileNotFoundError as open() does."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start - line_start + 1} "
                    f"of the line: {e.reason}); save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def text_lines(path, error=DataError, encoding="utf-8-sig"):
    """(line number from 1, line) of ``path`` as a text-mode file iterates them (universal
    newlines: each line ends in "\\n" but the last); errors as read_text."""
    return enumerate(io.StringIO(read_text(path, error, encoding), newline=None), 1)
