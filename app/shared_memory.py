"""System shared memory (the Open Inference Protocol's extension, as Triton defines it): regions a
client on the same host registers by the key of a POSIX shared-memory object, then names in infer
requests instead of sending the tensors' bytes.

    POST /v2/systemsharedmemory/region/{name}/register   {"key": "/input0", "offset": 0, "byte_size": 48000000}

`key` names an object in /dev/shm (what `shm_open(key)` opens: one leading '/', no other '/', no
'..'); `offset + byte_size` must lie within the object, and a name is registered once (409 again).
The server maps the whole object once (mmap, shared, read-write) and keeps the mapping until the
region is unregistered or the server stops: inputs are NumPy arrays over the mapping (no copy),
outputs are written into it (one copy, from the computed tensor).

Several workers (LAYERLAB_WORKERS > 1): each worker process has its own mappings, but the
registrations are shared through a folder (`LAYERLAB_SHM_TABLE_DIR`, made by `python -m app.serve`):
one small file per region name, created exclusively (so a name is registered once across all
workers). A worker maps a region lazily, from its key, the first time a request names it, and
checks the file on every use, so an unregister through any worker is seen by all. One process
alone keeps the table in memory.

Imports neither torch nor FastAPI (errors are app.errors classes; app.api.routes.v2 serves them).
"""

import contextlib
import mmap
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from app.errors import BadRequest, LayerlabError

SHM_DIR = Path("/dev/shm")
"""Where POSIX shared-memory objects live on Linux: the only place a key may point."""
TABLE_DIR_ENV = "LAYERLAB_SHM_TABLE_DIR"
"""The folder workers share their registrations through (see the module docstring)."""
MAX_NAME_CHARS = 100
"""Region names (in UTF-8 bytes) and keys longer than this are refused (a table file's name is the
hex of the region's: within a file name's 255 bytes)."""


class Conflict(LayerlabError):
    """A region name registered already (Triton answers ALREADY_EXISTS, HTTP 409)."""

    status_code = 409


@dataclass(frozen=True)
class Registration:
    """What a client registered: the status endpoint returns these as they are."""

    name: str
    key: str
    offset: int
    byte_size: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def object_path(key: Any) -> Path:
    """The /dev/shm file a key names, refusing anything that could reach outside /dev/shm."""
    if not isinstance(key, str) or not key:
        raise BadRequest(f"'key' must be a non-empty string, got {key!r:.100}", field="key", actual=repr(key)[:100])
    name = key[1:] if key.startswith("/") else key
    if not name or len(name) > MAX_NAME_CHARS or "/" in name or "\0" in name or ".." in name or name in (".", ".."):
        raise BadRequest(
            f"'key' {key[:100]!r} is not a shared-memory object's key: it must be '/' and a name (at most "
            f"{MAX_NAME_CHARS} characters, no other '/', no '..'), as shm_open takes it",
            field="key",
            expected="/<name>",
            actual=key[:100],
        )
    return SHM_DIR / name


def _whole_number(value: Any, field: str) -> int:
    if type(value) is not int or value < 0:
        raise BadRequest(
            f"'{field}' must be a whole number of bytes (>= 0), got {value!r:.100}",
            field=field,
            actual=repr(value)[:100],
        )
    return value


def check_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_NAME_CHARS:
        raise BadRequest(
            f"a region name must have 1 to {MAX_NAME_CHARS} bytes (UTF-8), got {len(name.encode())}",
            field="region_name",
            actual=name[:100],
        )
    return name


def registration(name: str, body: Any) -> Registration:
    """A register request's body `{"key", "offset", "byte_size"}`, checked (not yet against the object)."""
    check_name(name)
    if not isinstance(body, dict):
        raise BadRequest(
            'the register request must be a JSON object {"key": ..., "offset": ..., "byte_size": ...}',
            field="body",
            actual=type(body).__name__,
        )
    unknown = sorted(set(body) - {"key", "offset", "byte_size"})
    if unknown:
        raise BadRequest(
            f"the register request has an unknown key {unknown[0][:100]!r}; it takes 'key', 'offset' and 'byte_size'",
            field=unknown[0][:100],
        )
    for required in ("key", "byte_size"):
        if required not in body:
            raise BadRequest(f"the register request needs {required!r}", field=required)
    key = body["key"]
    object_path(key)
    offset = _whole_number(body.get("offset", 0), "offset")
    byte_size = _whole_number(body["byte_size"], "byte_size")
    if byte_size == 0:
        raise BadRequest("'byte_size' must be at least 1 byte", field="byte_size", actual=0)
    return Registration(name, key, offset, byte_size)


class Region:
    """A registration mapped into this process: the whole object, shared, read-write."""

    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        path = object_path(registration.key)
        try:
            # O_NOFOLLOW: a symlink planted in /dev/shm is not followed elsewhere.
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise BadRequest(
                f"'key' {registration.key!r}: no shared-memory object this server can open read-write "
                f"({exc.strerror}); create it first (shm_open, multiprocessing.shared_memory, "
                "tritonclient.utils.shared_memory.create_shared_memory_region)",
                field="key",
                actual=registration.key,
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadRequest(
                    f"'key' {registration.key!r} is not a shared-memory object", field="key", actual=registration.key
                )
            end = registration.offset + registration.byte_size
            if end > info.st_size:
                raise BadRequest(
                    f"offset {registration.offset} + byte_size {registration.byte_size} = {end} bytes runs past the "
                    f"end of shared-memory object {registration.key!r}, which has {info.st_size} bytes",
                    field="byte_size",
                    expected=f"offset + byte_size <= {info.st_size}",
                    actual=end,
                )
            self._mapping: mmap.mmap | None = mmap.mmap(fd, info.st_size)
        finally:
            os.close(fd)  # the mapping keeps the object alive; the descriptor is not needed
        self.view = memoryview(self._mapping)[registration.offset : end]
        self.inode = (info.st_dev, info.st_ino)

    def slice(self, offset: Any, byte_size: Any, where: str) -> memoryview:
        """`byte_size` bytes at `offset` into the region (a view of the mapping), bounds checked."""
        offset = _whole_number(offset, f"{where}.shared_memory_offset")
        byte_size = _whole_number(byte_size, f"{where}.shared_memory_byte_size")
        size = self.registration.byte_size
        if offset + byte_size > size:
            raise BadRequest(
                f"{where}: shared_memory_offset {offset} + shared_memory_byte_size {byte_size} = "
                f"{offset + byte_size} bytes runs past the end of region {self.registration.name!r}, "
                f"which has {size} bytes",
                field=f"{where}.shared_memory_byte_size",
                expected=f"<= {size - offset}",
                actual=byte_size,
            )
        return self.view[offset : offset + byte_size]

    def close(self) -> None:
        """Unmap now, or, while a request still holds arrays over the mapping, when the last goes."""
        mapping, self._mapping = self._mapping, None
        with contextlib.suppress(BufferError):  # an array over the whole region is alive: it goes with it
            self.view.release()
        if mapping is not None:
            with contextlib.suppress(BufferError):  # views of it are alive: CPython unmaps it when the last goes
                mapping.close()


class _MemoryTable:
    """Registrations of one process."""

    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}

    def add(self, entry: Registration) -> bool:
        if entry.name in self._entries:
            return False
        self._entries[entry.name] = entry
        return True

    def get(self, name: str) -> Registration | None:
        return self._entries.get(name)

    def remove(self, name: str) -> bool:
        return self._entries.pop(name, None) is not None

    def all(self) -> list[Registration]:
        return list(self._entries.values())


class _FolderTable:
    """Registrations shared by several worker processes: one file per name, created exclusively."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, name: str) -> Path:
        return self.folder / name.encode().hex()

    def add(self, entry: Registration) -> bool:
        try:
            fd = os.open(self._file(entry.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(entry.as_dict()))
        return True

    def get(self, name: str) -> Registration | None:
        try:
            return Registration(**orjson.loads(self._file(name).read_bytes()))
        except (OSError, orjson.JSONDecodeError):  # absent (or a name too long to be), or being written this instant
            return None

    def remove(self, name: str) -> bool:
        try:
            self._file(name).unlink()
        except OSError:  # absent, or a name too long to have been registered
            return False
        return True

    def all(self) -> list[Registration]:
        found = (self.get(bytes.fromhex(path.name).decode()) for path in sorted(self.folder.iterdir()))
        return [entry for entry in found if entry is not None]


class SharedMemoryRegistry:
    """The server's registered regions and their mappings in this process (one per app)."""

    def __init__(self, table_dir: str | Path | None = None) -> None:
        self._table: _MemoryTable | _FolderTable = (
            _MemoryTable() if table_dir is None else _FolderTable(Path(table_dir))
        )
        self._mapped: dict[str, Region] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_environment(cls) -> "SharedMemoryRegistry":
        return cls(os.environ.get(TABLE_DIR_ENV) or None)

    def register(self, name: str, body: Any) -> None:
        entry = registration(name, body)
        with self._lock:
            if self._table.get(name) is not None:
                raise self._conflict(name)
            region = Region(entry)  # checks the key, the object and the bounds before anything is recorded
            if not self._table.add(entry):
                region.close()
                raise self._conflict(name)
            self._drop(name)
            self._mapped[name] = region

    def _conflict(self, name: str) -> Conflict:
        return Conflict(
            f"shared memory region {name[:100]!r} is registered already; unregister it first",
            field="region_name",
            actual=name[:100],
        )

    def unregister(self, name: str | None = None) -> None:
        """One region, or every one (`name` None). Unregistering an unknown name is not an error (as Triton)."""
        with self._lock:
            names = [name] if name is not None else [entry.name for entry in self._table.all()] + list(self._mapped)
            for each in names:
                self._table.remove(each)
                self._drop(each)

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is None:
            return [entry.as_dict() for entry in self._table.all()]
        entry = self._table.get(name)
        if entry is None:
            raise self._unknown(name, "region_name")
        return [entry.as_dict()]

    def region(self, name: Any, where: str) -> Region:
        """The region an infer request names, mapped here (lazily, from its key, in another worker)."""
        field = f"{where}.shared_memory_region"
        if not isinstance(name, str):
            raise BadRequest(f"{field} must be a region's name, got {name!r:.100}", field=field)
        with self._lock:
            entry = self._table.get(name)
            mapped = self._mapped.get(name)
            if entry is None:
                self._drop(name)
                raise self._unknown(name, field)
            if mapped is not None and mapped.registration == entry and self._same_object(mapped):
                return mapped
            self._drop(name)  # re-registered under the same name elsewhere: map it afresh
            region = Region(entry)
            self._mapped[name] = region
            return region

    def _same_object(self, region: Region) -> bool:
        """With workers sharing the table, a name may have been unregistered and registered again
        elsewhere with the same key but a new object behind it: then the old mapping is stale."""
        if isinstance(self._table, _MemoryTable):
            return True
        try:
            info = os.stat(object_path(region.registration.key), follow_symlinks=False)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == region.inode

    def tensor_view(self, parameters: dict[str, Any], where: str) -> memoryview:
        """The bytes an input or output names by `shared_memory_region`, `shared_memory_offset`
        (default 0) and `shared_memory_byte_size`: a view of the mapping."""
        if "shared_memory_byte_size" not in parameters:
            raise BadRequest(
                f"{where} names shared_memory_region but no shared_memory_byte_size; both are required",
                field=f"{where}.parameters.shared_memory_byte_size",
            )
        with self._lock:  # no unregister between finding the region and taking the view
            region = self.region(parameters["shared_memory_region"], f"{where}.parameters")
            return region.slice(
                parameters.get("shared_memory_offset", 0), parameters["shared_memory_byte_size"], f"{where}.parameters"
            )

    def _unknown(self, name: str, field: str) -> BadRequest:
        return BadRequest(
            f"no system shared memory region {name[:100]!r} is registered "
            "(POST /v2/systemsharedmemory/region/{name}/register first)",
            field=field,
            actual=name[:100],
        )

    def _drop(self, name: str) -> None:
        region = self._mapped.pop(name, None)
        if region is not None:
            region.close()

    def close(self) -> None:
        """Unmap every region (the server stops). The registrations themselves stay with the table."""
        with self._lock:
            for name in list(self._mapped):
                self._drop(name)

    def __iter__(self) -> Iterator[Region]:
        return iter(list(self._mapped.values()))
