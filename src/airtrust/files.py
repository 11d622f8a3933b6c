"""All-or-nothing file output.

A command that writes several files (a CA, a certificate and its key, a hash
directory) either leaves all of them or none: every target is checked first,
everything is then written to temporary files beside the targets, and only
then renamed into place. Key files are created 0600 from the first byte
(``os.open`` with the mode), never chmod-ed after the fact, so no other user
can ever read them.

``--force`` replaces files, never a user's folder (issue #27: ``bundle build
--out d --force`` once deleted ``d`` and everything in it). A file target that
is a folder is refused with or without ``--force``; a tree target (a hash
directory) replaces only a folder holding nothing but what such a tree holds,
so no file the user put there is ever deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from airtrust.errors import InputError, OutputExistsError, OutputIsFolder, OutputNotAFolder

__all__ = ["PUBLIC_MODE", "SECRET_MODE", "OutputSet", "read_input", "read_secret"]

PUBLIC_MODE = 0o644
SECRET_MODE = 0o600


@dataclass
class OutputSet:
    """Files to write together; call :meth:`commit` once everything is computed."""

    force: bool = False
    files: list[tuple[Path, bytes, int]] = field(default_factory=list)
    trees: list[tuple[Path, list[tuple[str, bytes]]]] = field(default_factory=list)
    #: per target: what to say after "X is a folder" (e.g. "give a file path (or -f hashdir)")
    folder_hints: dict[Path, str] = field(default_factory=dict)
    #: per tree: the names an existing folder may hold for --force to replace it
    tree_names: dict[Path, re.Pattern[str]] = field(default_factory=dict)

    def add(
        self, path: Path, data: bytes, *, secret: bool = False, folder_hint: str | None = None
    ) -> None:
        self.files.append((path, data, SECRET_MODE if secret else PUBLIC_MODE))
        if folder_hint is not None:
            self.folder_hints[path] = folder_hint

    def add_tree(
        self, path: Path, entries: list[tuple[str, bytes]], *, names: re.Pattern[str]
    ) -> None:
        """A directory replaced as a whole (e.g. an OpenSSL hash directory). An existing
        folder is replaced only if every entry in it is a file whose name ``names``
        matches: what an earlier run wrote, never what a user keeps there."""
        self.trees.append((path, entries))
        self.tree_names[path] = names

    def existing(self) -> list[Path]:
        targets = [p for p, _, _ in self.files]
        targets += [p for p, _ in self.trees if not _empty_folder(p)]
        return [p for p in targets if p.exists() or p.is_symlink()]

    def check(self) -> None:
        """Refuse, before anything is written, every target that cannot be written as asked."""
        for path in [p for p, _, _ in self.files] + [p for p, _ in self.trees]:
            _check_parents(path)
        for path, _, _ in self.files:
            if path.is_dir():
                raise OutputIsFolder(
                    f"{path} is a folder",
                    hint=self.folder_hints.get(path, "give a file path"),
                )
        for path, _ in self.trees:
            _check_tree_target(path, self.tree_names[path])
        if not self.force and (clash := self.existing()):
            names = ", ".join(str(p) for p in clash)
            raise OutputExistsError(
                f"refusing to overwrite {names}",
                hint="pass --force to replace, or choose another --out",
            )

    def commit(self) -> list[Path]:
        self.check()
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
                hint="check the folder is writable",
                reference="cannot-write",
            ) from exc
        for tmp, path in staged:
            if tmp.is_dir() and path.is_dir() and not path.is_symlink():
                # A tree over its own earlier output: check() made sure it holds nothing else.
                import shutil  # here, not at the top: inspect's fast lane only reads

                shutil.rmtree(path)
            os.replace(tmp, path)
        return [path for _, path in staged]


def _check_parents(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder (``--out f1/ca.crt``
    where f1 is a file would otherwise fail half-way with "File exists")."""
    for parent in path.parents:
        if parent.is_dir():
            return
        if parent.exists() or parent.is_symlink():
            raise OutputNotAFolder(
                f"{parent} is a file, not a folder, so {path} cannot be written",
                hint=f"name a folder (new or existing) instead, or move {parent} away",
            )


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _check_tree_target(path: Path, names: re.Pattern[str]) -> None:
    if path.is_symlink():
        raise OutputIsFolder(
            f"{path} is a symbolic link",
            hint=f"give the folder itself ({path.resolve()}) or a new folder path",
            reference="output-is-link",
        )
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputNotAFolder(
            f"{path} is a file, not a folder",
            hint="this output is a folder: give a new or empty folder (or one airtrust wrote), "
            "or move the file away",
        )
    # Said with or without --force: asking for --force first, only to refuse it, misleads.
    foreign = sorted(
        e.name
        for e in path.iterdir()
        if e.is_symlink() or not e.is_file() or not names.fullmatch(e.name)
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputIsFolder(
            f"{path} holds {shown}, which airtrust did not write; --force replaces only a "
            "folder airtrust wrote",
            hint="give a new or empty folder, or move those files away",
            reference="output-folder-not-ours",
        )


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


def read_secret(
    *,
    env: str | None = None,
    file: str | None = None,
    flags: tuple[str, str] = ("--passphrase-env", "--passphrase-file"),
) -> bytes | None:
    """A passphrase from an environment variable or a file (first line), never from argv;
    ``flags`` name the two options in messages."""
    if env and file:
        raise InputError(f"both {flags[0]} and {flags[1]} given", hint="use only one of them")
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
