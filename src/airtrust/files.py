"""All-or-nothing file output.

A command that writes several files (a CA, a certificate and its key, a hash
directory) either leaves all of them or none: everything is first written to
temporary files beside the targets, checked, then renamed into place. Key
files are created 0600 from the first byte (``os.open`` with the mode), never
chmod-ed after the fact, so no other user can ever read them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from airtrust.errors import InputError, OutputExistsError

__all__ = ["PUBLIC_MODE", "SECRET_MODE", "OutputSet", "read_input", "read_secret"]

PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


@dataclass
class OutputSet:
    """Files to write together; call :meth:`commit` once everything is computed."""

    force: bool = False
    files: list[tuple[Path, bytes, int]] = field(default_factory=list)
    trees: list[tuple[Path, list[tuple[str, bytes]]]] = field(default_factory=list)

    def add(self, path: Path, data: bytes, *, secret: bool = False) -> None:
        self.files.append((path, data, SECRET_MODE if secret else PUBLIC_MODE))

    def add_tree(self, path: Path, entries: list[tuple[str, bytes]]) -> None:
        """A directory replaced as a whole (e.g. an OpenSSL hash directory)."""
        self.trees.append((path, entries))

    def existing(self) -> list[Path]:
        targets = [p for p, _, _ in self.files] + [p for p, _ in self.trees]
        return [p for p in targets if p.exists() or p.is_symlink()]

    def commit(self) -> list[Path]:
        if not self.force and (clash := self.existing()):
            names = ", ".join(str(p) for p in clash)
            raise OutputExistsError(
                f"refusing to overwrite {names}",
                hint="pass --force to replace, or choose another --out",
            )
        staged: list[tuple[Path, Path]] = []
        try:
            for path, data, mode in self.files:
                staged.append((_stage_file(path, data, mode), path))
            for path, entries in self.trees:
                staged.append((_stage_tree(path, entries), path))
        except OSError as exc:
            for tmp, _ in staged:
                _remove(tmp)
            raise InputError(
                f"cannot write {exc.filename or 'output'}: {exc.strerror}",
                hint="check the folder exists and is writable",
                reference="cannot-write",
            ) from exc
        for tmp, path in staged:
            if path.is_dir() and not path.is_symlink():
                import shutil  # here, not at the top: inspect's fast lane only reads

                shutil.rmtree(path)
            os.replace(tmp, path)
        return [path for _, path in staged]


def _stage_file(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _remove(Path(name))
        raise
    return Path(name)


def _stage_tree(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o755)
    for name, data in entries:
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PUBLIC_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return tmp


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()


def read_input(name: str) -> bytes:
    """Bytes of a file, or of standard input for '-'; errors name the file."""
    if name == "-":
        import sys

        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{name} does not exist", hint="check the path") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name} is a folder", hint="name a file") from exc
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}", hint="check permissions") from exc


def read_secret(*, env: str | None = None, file: str | None = None) -> bytes | None:
    """A passphrase from an environment variable or a file (first line), never from argv."""
    if env and file:
        raise InputError(
            "both --passphrase-env and --passphrase-file given", hint="use only one of them"
        )
    if env:
        value = os.environ.get(env)
        if not value:
            raise InputError(
                f"environment variable {env} is not set or empty", hint=f"export {env}"
            )
        return value.encode()
    if file:
        data = read_input(file).splitlines()
        if not data or not data[0]:
            raise InputError(f"{file} holds no passphrase", hint="put the passphrase on line 1")
        return data[0]
    return None
