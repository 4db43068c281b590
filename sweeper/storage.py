"""Experiment storage: a local (or NFS) folder, or a URI that pyarrow understands (s3://, gs://, file://).

Ray Tune and Train write there directly; the sweeper reads and writes its own small files (settings,
result tables, figures) through the same pyarrow file system, so ``results``, ``best`` and
``train`` work on either. Checkpoints on a remote store are copied to a temporary folder to load.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

def atomic_write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, then rename it
    into place: a crash at any point leaves either the old file or the new one, never half of one
    (a stray ``.<name>.*`` temporary at worst, which no reader looks at)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


@dataclass(frozen=True)
class Location:
    """A folder or file: ``uri`` is what Ray takes as a storage path (an absolute local path, or the
    URI); ``path`` is the same place inside ``fs``."""

    uri: str
    path: str
    remote: bool

    @property
    def fs(self):
        import pyarrow.fs as pafs

        if not self.remote:
            return pafs.LocalFileSystem()
        fs, _ = pafs.FileSystem.from_uri(self.uri)
        return fs

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def join(self, *parts: str) -> "Location":
        if self.remote:
            return Location("/".join([self.uri.rstrip("/"), *parts]), posixpath.join(self.path, *parts), True)
        return Location(os.path.join(self.uri, *parts), os.path.join(self.path, *parts), False)

    def sibling_path(self, fs_path: str) -> "Location":
        """Another path on the same file system (e.g. a checkpoint path Ray reported)."""
        if not self.remote:
            return Location(fs_path, fs_path, False)
        scheme = _URI.match(self.uri).group(0)  # s3:// + bucket/key, file:// + /abs/path
        return Location(scheme + fs_path, fs_path, True)

    # ------------------------------------------------------------------ queries
    def _info(self):
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._info().type == pafs.FileType.Directory

    def children(self) -> list[str]:
        """Names directly inside this folder (empty when it does not exist)."""
        import pyarrow.fs as pafs

        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)

    # ------------------------------------------------------------------ io
    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as f:
            return f.read().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write a file (local: to a temporary name, then renamed into place)."""
        if not self.remote:
            atomic_write_file(Path(self.path), lambda f: f.write(data))
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def makedirs(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[str]:
        """A local folder with this folder's files (itself when local)."""
        if not self.remote:
            yield self.path
            return
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory(prefix="idn-copy-") as d:
            pafs.copy_files(self.path, d, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
            yield d


def locate(text: str) -> Location:
    """The :class:`Location` of a local path (made absolute) or a URI (``file://`` counts as local)."""
    text = str(text)
    if is_uri(text):
        if text.lower().startswith("file://"):
            p = os.path.abspath(text[len("file://"):])
            return Location(p, p, False)
        import pyarrow.fs as pafs

        _, path = pafs.FileSystem.from_uri(text)
        return Location(text.rstrip("/"), path.rstrip("/"), True)
    p = os.path.abspath(os.path.expanduser(text))
    return Location(p, p, False)
