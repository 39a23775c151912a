"""The examples' data folders are reused only when the same inputs made them: calibration crops
made before a photo's wheel was installed are not the crops a fresh machine makes."""

from __future__ import annotations

from examples import data


def test_calibration_crops_are_remade_when_the_photo_set_changes(tmp_path, monkeypatch):
    first = data.calibration_photos(tmp_path, count=4)
    assert any("astronaut" in p.name for p in first.files)
    again = data.calibration_photos(tmp_path, count=4)
    assert again.files == first.files                                   # same photos: reused
    monkeypatch.delitem(data.CALIBRATION_PHOTOS, "astronaut")           # a wheel went missing
    other = data.calibration_photos(tmp_path, count=4)
    assert not any("astronaut" in p.name for p in other.files)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in other.files)


def test_an_empty_or_file_out_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    """--out "" is '.' to typer and argparse: 450 digit images (72 YOLO views) landed in the current folder;
    a file as --out was a traceback in examples.yolo."""
    from examples import yolo

    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("")
    assert data.main(["digits-test", "--out", ""]) == 2
    assert data.main(["digits-test", "--out", str(afile)]) == 2
    assert yolo.main(["views", "--out", ""]) == 2
    assert yolo.main(["views", "--out", str(afile)]) == 2
    assert yolo.main(["board", "--profile", "p.yaml", "--targets", "t.yaml", "--board", "b", "--image", "i.png",
                      "--out", "o.png", "--conf", "nan"]) == 2
    err = capsys.readouterr().err
    assert err.count("--out is empty") == 2 and err.count("is a file, not a folder") == 2 and "--conf nan" in err
    assert "Traceback" not in err and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_sigterm_mid_write_leaves_no_staging_file(tmp_path):
    """`python -m examples.data` died on SIGTERM without cleaning up (deployer's CLI turns it into an
    interrupt): `.NAME.tmp-*` staging files stayed in the data folder, and no later run removes them."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os, runpy, signal, sys\n"
            "real = os.fsync\n"
            "def fsync(fd):\n"                       # SIGTERM arrives while a file is being written
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    real(fd)\n"
            "os.fsync = fsync\n"
            "sys.argv = ['examples.data', 'calibration', '--out', sys.argv[1]]\n"
            "runpy.run_module('examples.data', run_name='__main__', alter_sys=True)\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name] == []


def test_a_folder_another_tool_wrote_is_refused_and_left_alone(tmp_path, capsys):
    """A stale stamp made the writer delete every image its list.txt named: pointed at a user's own image
    folder (their list.txt, a stamp.txt of theirs), `examples.data` deleted the user's photos."""
    mine = tmp_path / "photo.png"
    mine.write_bytes(b"user's photo")
    (tmp_path / "list.txt").write_text(f"{mine}\n")
    (tmp_path / "stamp.txt").write_text("my own notes\n")
    assert data.main(["calibration", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "list.txt, stamp.txt that examples.data did not write" in err and "Traceback" not in err
    assert mine.read_bytes() == b"user's photo"
    assert (tmp_path / "list.txt").read_text() == f"{mine}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt", "photo.png", "stamp.txt"]
    (tmp_path / "stamp.txt").unlink()                       # a list alone is theirs too
    assert data.main(["imagenet", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "list.txt").read_text() == f"{mine}\n"
    assert "has list.txt that examples.data did not write" in capsys.readouterr().err
