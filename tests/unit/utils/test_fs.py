"""Output folders are checked writable before any work, naming the key; the check leaves nothing."""
import os
import tempfile

import pytest

from ppufo.utils.errors import ConfigError
from ppufo.utils.fs import check_writable_dir


def read_only_dir(tmp_path):
    """An existing folder this process cannot create files in (root ignores mode bits: then a
    read-only system folder such as /sys), or None."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return str(d)
    for d in ("/sys/kernel", "/sys", "/proc/sys"):
        try:
            fd, probe = tempfile.mkstemp(dir=d)
        except OSError:
            return d
        os.close(fd)
        os.remove(probe)
    return None


def test_a_writable_or_creatable_folder_passes_and_nothing_is_left(tmp_path):
    assert check_writable_dir(str(tmp_path), "Global.output_dir") == str(tmp_path)
    assert check_writable_dir(str(tmp_path / "a" / "b"), "Global.output_dir") == str(tmp_path / "a" / "b")
    assert os.listdir(tmp_path) == []  # not created, no probe file left


def test_a_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as e:
        check_writable_dir(str(tmp_path / "f" / "out"), "Export.save_dir")
    assert str(e.value) == (f"Export.save_dir={tmp_path / 'f' / 'out'}: {tmp_path / 'f'} is a file, not a folder; "
                            f"choose another with -o Export.save_dir=...")


def test_a_read_only_folder_is_refused_naming_the_key(tmp_path):
    ro = read_only_dir(tmp_path)
    if ro is None:
        pytest.skip("no folder here is read-only for this user")
    with pytest.raises(ConfigError, match=f"^Global.output_dir={ro}: cannot write there: "):
        check_writable_dir(ro, "Global.output_dir")
    with pytest.raises(ConfigError, match=f"^--out={ro}/ranks: cannot write there \\(it would be created in {ro}\\): "
                                          f".*; pass another --out$"):
        check_writable_dir(f"{ro}/ranks", "--out")
