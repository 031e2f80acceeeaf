from __future__ import annotations

import os
import shutil

from hoban_pipelines.core.fingerprints import fingerprint_folder


def test_content_fingerprint_follows_content_not_timestamps(tmp_path):
    root = tmp_path / "base"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "big.jpg").write_bytes(os.urandom(3 << 20))
    first = fingerprint_folder(root, content=True)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new mtimes, same content
    assert fingerprint_folder(copy, content=True).digest == first.digest
    assert fingerprint_folder(copy).digest != fingerprint_folder(root).digest  # the cheap kind sees mtimes
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.1 0.1\n")  # same size, new content
    assert fingerprint_folder(root, content=True).digest != first.digest
    assert first.files == 2 and first.by_suffix == {".jpg": 1, ".txt": 1}


def test_suffix_filter_and_hidden_files_are_ignored(tmp_path):
    (tmp_path / "a.xml").write_text("<annotations/>")
    (tmp_path / ".tmp-partial.xml").write_text("half")
    (tmp_path / "notes.md").write_text("x")
    assert fingerprint_folder(tmp_path, (".xml", ".zip")).files == 1
    before = fingerprint_folder(tmp_path, content=True).digest
    (tmp_path / "train.cache").write_bytes(b"ultralytics label cache")  # written by every training
    assert fingerprint_folder(tmp_path, content=True).digest == before
