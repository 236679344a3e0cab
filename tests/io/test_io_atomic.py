import pytest

from hetcache_cli.errors import InputError
from hetcache_cli.io.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text


def test_atomic_write_text_creates_parents_and_content(tmp_path, ls):
    out = tmp_path / "a" / "b" / "stats.json"
    atomic_write_text(out, '{"x": 1}')
    assert out.read_text() == '{"x": 1}'
    assert ls(out.parent) == ["stats.json"]


def test_atomic_write_bytes_replaces_existing(tmp_path):
    out = tmp_path / "data.bin"
    out.write_bytes(b"old")
    atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"new"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_failure_keeps_old_file_and_no_temp(tmp_path, ls, exc):
    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous")
    with pytest.raises(exc):
        with atomic_path(out) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".result.") and tmp.name.endswith(".tmp.mp4")
            tmp.write_bytes(b"partial")
            raise exc()
    assert out.read_bytes() == b"previous"
    assert ls(tmp_path) == ["result.mp4"]


def test_atomic_path_to_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path)):
        atomic_write_text(tmp_path, "x")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path, ls, exc):
    out = tmp_path / "frames"
    with atomic_dir(out) as tmp:
        assert tmp.parent == tmp_path and ls(tmp) == []
        (tmp / "00000.png").write_bytes(b"first")
    assert ls(out) == ["00000.png"]
    with pytest.raises(exc):
        with atomic_dir(out) as tmp:
            (tmp / "00000.png").write_bytes(b"partial")
            raise exc()
    assert ls(tmp_path) == ["frames"] and (out / "00000.png").read_bytes() == b"first"
    with atomic_dir(out) as tmp:
        (tmp / "00001.png").write_bytes(b"second")
    assert ls(tmp_path) == ["frames"] and ls(out) == ["00001.png"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with atomic_dir(tmp_path / "file"):
            pass
