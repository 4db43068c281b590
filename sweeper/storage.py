"""Experiment storage: a local (or NFS) folder, or a URI pyarrow understands (s3://, gs://, file://).

Ray Tune and Train write there directly; the sweeper reads and writes its own files (settings,
tables, figures, the Optuna journal) through the same pyarrow file system, so every command works
on either. Local files are written atomically (temporary file, fsync, rename) with the permissions
the process's umask gives a new file; errors reaching the storage become one-line
:class:`~model.errors.UserError` s at the places that create an experiment.
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

import pyarrow.fs as pafs

from model.errors import UserError

_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


def is_remote(text: str) -> bool:
    """True for ``scheme://`` storage other than ``file://`` (every node sees the same objects)."""
    m = _URI.match(str(text))
    return bool(m) and m.group(1).lower() != "file"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, rename: a crash
    leaves the old file or the new one, never half of one (at worst a hidden ``.<name>.*`` temporary,
    which no reader looks at). The file gets mode 0666 & ~umask, as ``open`` would give it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Location:
    """A folder or file: ``uri`` is what Ray takes as a storage path (an absolute local path, or the
    URI); ``path`` is the same place inside ``fs``."""

    uri: str
    path: str
    remote: bool

    @property
    def fs(self) -> pafs.FileSystem:
        return pafs.FileSystem.from_uri(self.uri)[0] if self.remote else pafs.LocalFileSystem()

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def parent_uri(self) -> str:
        return self.uri[: -len(self.name)].rstrip("/")

    def join(self, *parts: str) -> "Location":
        if self.remote:
            return Location("/".join([self.uri.rstrip("/"), *parts]), posixpath.join(self.path, *parts), True)
        return Location(os.path.join(self.uri, *parts), os.path.join(self.path, *parts), False)

    def sibling_path(self, fs_path: str) -> "Location":
        """Another path on the same file system (e.g. a checkpoint path Ray reported)."""
        if not self.remote:
            return Location(fs_path, fs_path, False)
        scheme = _URI.match(self.uri).group(0)
        return Location(scheme + fs_path, fs_path, True)

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def children(self) -> list[str]:
        """Names directly inside this folder (empty when it does not exist)."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
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
        with tempfile.TemporaryDirectory(prefix="idn-copy-") as d:
            pafs.copy_files(self.path, d, source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
            yield d


def locate(text: str) -> Location:
    """The :class:`Location` of a local path (made absolute) or a URI (``file://`` counts as local);
    a URI pyarrow cannot resolve is a :class:`UserError`."""
    text = str(text)
    if is_uri(text):
        if text.lower().startswith("file://"):
            p = os.path.abspath(text[len("file://"):])
            return Location(p, p, False)
        try:
            _, path = pafs.FileSystem.from_uri(text)
        except (OSError, ValueError) as err:
            raise UserError(f"storage {text!r}: {' '.join(str(err).split())}") from None
        return Location(text.rstrip("/"), path.rstrip("/"), True)
    p = os.path.abspath(os.path.expanduser(text))
    return Location(p, p, False)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn an error of the storage (unreachable, denied, not a folder) into one line."""
    try:
        yield
    except OSError as err:  # pyarrow's I/O errors are OSErrors too
        raise UserError(f"{what}: {' '.join((err.strerror or str(err)).split())}") from None


def check_writable(storage: str) -> None:
    """A local storage folder, or its nearest existing ancestor, must be a writable folder (a probe
    file is written there and removed, so nothing is left behind); a remote one must answer."""
    if is_remote(storage):
        loc = locate(storage)
        with storage_errors(f"storage {storage!r} cannot be reached"):
            loc.fs.get_file_info(loc.path)
        return
    path = Path(locate(storage).path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"storage {storage!r} cannot be created: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".idensenet-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise UserError(f"storage {storage!r} is not writable ({err.strerror or err})") from None


def experiment_location(storage: str, name: str) -> Location:
    """Where experiment (or run) ``name`` lives under ``storage``."""
    if not name or "/" in name or name in (".", "..") or name.strip() != name:
        raise UserError(f"--name {name!r} must be a plain folder name")
    return locate(storage).join(name)
