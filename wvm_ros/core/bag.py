"""Per-attempt rosbag2 bags in MCAP storage, written crash-safely. ROS-free.

Layout (what `ros2 bag record -s mcap` writes, so `ros2 bag info/play`, `rosbags` and the
`mcap` tools read it)::

    <output_dir>/<bag_name>/
        <bag_name>_0.mcap      # ros2msg schemas, cdr messages, chunked, indexed
        metadata.yaml          # rosbag2_bagfile_information v9 with custom_data
        .wvm_recording.yaml    # only while the bag is open (the crash marker)

Crash safety: `BagWriter` closes the current MCAP chunk and flushes the file every
`flush_period_s` (default 0.5 s), so a `kill -9` of the writing process loses at most the
messages of that last period. While a bag is open a marker file holds its custom data and
topics (rewritten at every flush); `recover_bag` turns a bag left with a marker (a
truncated MCAP without summary, no metadata.yaml) into a valid one: it reads every complete
record, rewrites the MCAP with its summary and writes metadata.yaml with
`custom_data.outcome = "interrupted"`. `recover_incomplete_bags(output_dir)` does that for
a whole folder (the logger calls it at start), but only for bags whose writer is gone: a
`BagWriter` holds an exclusive `flock` on its .mcap file while the bag is open (the kernel
drops it when the process dies, even on `kill -9`), and the marker records the writer's pid,
its start time and host; a bag still being written by a live process (another logger, or
a respawned one whose predecessor has not exited yet) is left alone.

Messages are written as the serialized CDR bytes rclpy hands out (`raw=True` subscriptions
or `rclpy.serialization.serialize_message`); message definitions (the `ros2msg` schemas)
come from `rosbags`' type store, extended with `.msg` files found on AMENT_PREFIX_PATH (or
in this repository's ros2_ws/src) for packages it does not know, e.g. wvm_msgs.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Iterator, Mapping

import yaml

MARKER_NAME = ".wvm_recording.yaml"
WRITER_MODES = ("chunked", "stream", "naive")
COMPRESSIONS = ("none", "zstd", "lz4")
METADATA_NAME = "metadata.yaml"
ROSBAG2_VERSION = 9


class BagError(RuntimeError):
    """A bag cannot be written or read; the message names the path and the reason."""


class DiskGuardError(BagError):
    """Recording stopped because free space or the size cap would be exceeded."""


class BagExistsError(BagError):
    """The bag folder already exists and is not empty (e.g. taken by another writer)."""


# ----------------------------------------------------------------------------- types

_TYPESTORE = None


def _typestore():
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


def normalize_typename(typename: str) -> str:
    """'sensor_msgs/Image' or 'sensor_msgs/msg/Image' -> 'sensor_msgs/msg/Image'."""
    parts = typename.strip().split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and all(parts):
        return typename.strip()
    raise BagError(f"message type {typename!r} is not of the form 'package/msg/Type'")


def _msg_search_dirs() -> list[Path]:
    dirs = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share")
    repo_src = Path(__file__).resolve().parents[2] / "ros2_ws" / "src"
    dirs.append(repo_src)
    return dirs


def _find_msg_file(typename: str) -> Path | None:
    pkg, _, name = normalize_typename(typename).split("/")
    for d in _msg_search_dirs():
        p = d / pkg / "msg" / f"{name}.msg"
        if p.is_file():
            return p
    return None


def register_msg_type(typename: str, text: str | None = None) -> None:
    """Teach the type store a message type (from `text`, or its .msg file on the ament path)."""
    from rosbags.typesys import get_types_from_msg

    typename = normalize_typename(typename)
    pkg, kind, name = typename.split("/")
    source = "the given text"
    if text is None:
        path = _find_msg_file(typename) if kind == "msg" else None
        if path is None:
            if kind != "msg":
                raise BagError(
                    f"no message definition for {typename}: it is a '{kind}' interface type (a "
                    f"service or action request / response / event / feedback type, e.g. a service "
                    f"introspection topic), which has no .msg file; expected a message type "
                    f"'package/msg/Type' that rosbags knows or whose .msg file is under an "
                    f"AMENT_PREFIX_PATH share folder"
                )
            raise BagError(
                f"no message definition for {typename}: not a standard type and no "
                f"{pkg}/msg/{name}.msg under AMENT_PREFIX_PATH share folders (source scripts/env.sh)"
            )
        source = str(path)
        text = path.read_text()
    try:
        types = get_types_from_msg(text, typename)
    except Exception as exc:  # rosbags raises its own parse errors
        raise BagError(f"the message definition of {typename} ({source}) cannot be parsed: {exc}") from exc
    _typestore().register(types)


def message_definition(typename: str) -> str:
    """The rosbag2 `ros2msg` definition text of a type, its dependencies appended."""
    from rosbags.typesys.base import TypesysError

    ts = _typestore()
    typename = normalize_typename(typename)
    if typename not in ts.fielddefs:
        register_msg_type(typename)
    for _ in range(32):
        try:
            return ts.generate_msgdef(typename, ros_version=2)[0]
        except (TypesysError, KeyError) as exc:  # a field type is unknown
            m = re.search(r"'([A-Za-z0-9_]+/(?:msg/)?[A-Za-z0-9_]+)'", str(exc))
            if not m or normalize_typename(m.group(1)) in ts.fielddefs:
                raise BagError(f"cannot build the definition of {typename}: {exc}") from exc
            register_msg_type(m.group(1))
    raise BagError(f"cannot resolve the definition of {typename} (too many nested unknown types)")


_BAG_STORES: dict[str, object] = {}   # (type, recorded definition) -> a type store that has it


def _layout(msgdef: str) -> str:
    """A definition without comments and blank lines (what decides the CDR layout)."""
    lines = (ln.split("#", 1)[0].strip() for ln in msgdef.splitlines())
    return "\n".join(" ".join(ln.split()) for ln in lines if ln)


def _store_for_definition(typename: str, msgdef: str):
    """A type store that decodes `typename` as `msgdef` (a bag's recorded ros2msg definition,
    dependencies appended), for bags written with an older or newer version of a message."""
    import hashlib

    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    key = hashlib.sha256(f"{typename}\n{msgdef}".encode()).hexdigest()
    if key not in _BAG_STORES:
        ts = get_typestore(Stores.ROS2_KILTED)
        try:
            ts.register(get_types_from_msg(msgdef, typename))
        except Exception as e:  # rosbags raises its own parse errors
            raise BagError(f"the bag's definition of {typename} cannot be parsed: {e}") from e
        _BAG_STORES[key] = ts
    return _BAG_STORES[key]


def deserialize(data: bytes, typename: str, msgdef: str | None = None):
    """CDR bytes -> a rosbags message object (dataclass-like, numpy arrays for arrays).

    `msgdef`: the definition the message was recorded with (a bag's connection); when its
    layout differs from this checkout's (a bag from before a field was added, e.g.
    wvm_msgs/Progress `success`), the message is decoded with the recorded definition, so old
    bags stay readable; fields it lacks are simply absent from the object."""
    typename = normalize_typename(typename)
    ts = _typestore()
    if typename not in ts.fielddefs:
        message_definition(typename)
    if msgdef and msgdef.strip() and _layout(msgdef) != _layout(message_definition(typename)):
        ts = _store_for_definition(typename, msgdef)
    return ts.deserialize_cdr(data, typename)


def serialize(msg, typename: str) -> bytes:
    """A rosbags message object -> CDR bytes (tests, offline tools)."""
    typename = normalize_typename(typename)
    ts = _typestore()
    if typename not in ts.fielddefs:
        message_definition(typename)
    return bytes(ts.serialize_cdr(msg, typename))


def msg_class(typename: str):
    typename = normalize_typename(typename)
    ts = _typestore()
    if typename not in ts.fielddefs:
        message_definition(typename)
    return ts.types[typename]


# ----------------------------------------------------------------------------- naming

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def bag_name(episode_id: str, attempt: int) -> str:
    ep = _SAFE.sub("_", str(episode_id)).strip("._") or "episode"
    return f"{ep}_att{int(attempt):03d}"


def unique_bag_dir(output_dir: str | os.PathLike, name: str) -> Path:
    out = Path(output_dir)
    p = out / name
    i = 1
    while p.exists():
        p = out / f"{name}_{i}"
        i += 1
    return p


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable; BagError naming it otherwise."""
    p = Path(path).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".wvm_write_probe_{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise BagError(f"output folder {str(p)!r} is not writable: {exc.strerror or exc}") from exc
    return p


def dir_size_bytes(path: str | os.PathLike) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


# ----------------------------------------------------------------------------- disk guard

@dataclass
class DiskGuard:
    """Stops recording before the disk fills.

    `min_free_bytes`: refuse to write when the file system of `path` would have less free
    space than this. `max_total_bytes` (0 = no cap): cap on the bytes under `path`
    (what was there at start plus what this process wrote since). Free space is polled at
    most every `poll_s`; in between it is estimated from the bytes written.
    """

    path: Path
    min_free_bytes: int = 512 * 2**20
    max_total_bytes: int = 0
    poll_s: float = 1.0
    _base_bytes: int = 0
    _written: int = 0
    _free: int = 0
    _free_at_poll_written: int = 0
    _last_poll: float = -1e9

    def __post_init__(self):
        self.path = Path(self.path)
        self._base_bytes = dir_size_bytes(self.path) if self.max_total_bytes else 0
        self._poll(force=True)

    def _poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_poll >= self.poll_s:
            self._free = shutil.disk_usage(self.path).free
            self._free_at_poll_written = self._written
            self._last_poll = now

    @property
    def total_bytes(self) -> int:
        return self._base_bytes + self._written

    def free_bytes(self) -> int:
        self._poll()
        return self._free - (self._written - self._free_at_poll_written)

    def check(self, nbytes: int) -> None:
        """Raise DiskGuardError if writing `nbytes` more would break a limit."""
        if self.max_total_bytes and self.total_bytes + nbytes > self.max_total_bytes:
            raise DiskGuardError(
                f"size cap reached under {str(self.path)!r}: {self.total_bytes + nbytes} bytes "
                f"would exceed max_total_mb={self.max_total_bytes / 2**20:.3f} MiB; recording stopped"
            )
        free = self.free_bytes()
        if free - nbytes < self.min_free_bytes:
            raise DiskGuardError(
                f"disk almost full at {str(self.path)!r}: {free / 2**20:.1f} MiB free, "
                f"min_free_mb={self.min_free_bytes / 2**20:.1f} MiB; recording stopped"
            )

    def add(self, nbytes: int) -> None:
        self._written += nbytes


# ----------------------------------------------------------------------------- writer

@dataclass
class TopicInfo:
    name: str
    typename: str
    qos: str = ""          # offered_qos_profiles as YAML text (rosbag2 form), may be ""
    count: int = 0
    channel_id: int = 0


@dataclass
class BagInfo:
    path: Path
    message_count: int
    counts: dict[str, int]
    start_ns: int
    end_ns: int
    custom_data: dict[str, str] = field(default_factory=dict)
    recovered: bool = False


def check_compression(compression: str | None, mode: str = "chunked") -> str:
    """The normalised compression name ("none", "zstd" or "lz4"); BagError naming the value and
    what is allowed otherwise (also when it needs writer mode "chunked")."""
    name = str(compression if compression is not None else "none").strip().lower() or "none"
    if name not in COMPRESSIONS:
        raise BagError(f"compression {compression!r} not supported; expected one of {', '.join(COMPRESSIONS)}")
    if mode not in WRITER_MODES:
        raise BagError(f"writer mode {mode!r}: expected one of {', '.join(WRITER_MODES)}")
    if mode != "chunked" and name != "none":
        raise BagError(f"compression {compression!r} needs writer mode 'chunked' (got {mode!r})")
    return name


def _compression(name: str):
    from mcap.writer import CompressionType

    name = check_compression(name)
    return {"none": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}[name]


# ----------------------------------------------------------------------------- writer liveness

try:
    import fcntl as _fcntl
except ImportError:  # not POSIX: no locks, the marker's pid decides
    _fcntl = None


def _try_lock(fd: int) -> bool | None:
    """Exclusive non-blocking flock on `fd`: True (taken), False (held by another open file,
    in this process or another), None (locks not supported here)."""
    if _fcntl is None:
        return None
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP, ... (some network file systems)
        return None


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:  # noqa: BLE001 - no psutil, no such process, no access: unknown
        return None


_HOST = socket.gethostname()


def _writer_process_alive(marker: Mapping) -> str | None:
    """Whether the process a marker names may still be running: a description of it, or None
    when it is gone (no such pid, or the pid now belongs to a process started at another time).
    A marker from another host cannot be checked here: None (the file lock decides)."""
    try:
        pid = int(marker.get("pid"))
    except (TypeError, ValueError):
        return None
    host = marker.get("host")
    if host and str(host) != _HOST:
        return None
    try:
        start = float(marker["pid_start_unix"])
    except (KeyError, TypeError, ValueError):
        start = None
    if pid == os.getpid():
        # this process: alive only if it is the writer that started the bag (an open
        # BagWriter here without a lock); otherwise the pid was reused (e.g. a container restart)
        mine = _process_start_time(pid)
        if start is not None and mine is not None and abs(start - mine) <= 1.0:
            return f"this process (pid {pid})"
        return None
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            created = proc.create_time()
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return f"pid {pid} (running, not ours to inspect)"
        if start is not None and abs(start - created) > 1.0:
            return None  # pid reused by another process
        return f"pid {pid}" + (f" on {host}" if host else "")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return f"pid {pid} (running, owned by another user)"
    return f"pid {pid}" + (f" on {host}" if host else "")


def _qos_metadata(qos: str) -> dict[str, str]:
    return {"offered_qos_profiles": qos or "", "topic_type_hash": ""}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
    os.replace(tmp, path)


def _metadata_yaml(bag_dir: Path, mcap_name: str, topics: list[TopicInfo], start_ns: int,
                   end_ns: int, custom_data: Mapping[str, str], compression: str) -> str:
    count = sum(t.count for t in topics)
    duration = max(0, end_ns - start_ns) if count else 0
    start = start_ns if count else 0
    info = {
        "version": ROSBAG2_VERSION,
        "storage_identifier": "mcap",
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": t.name,
                    "type": t.typename,
                    "serialization_format": "cdr",
                    "offered_qos_profiles": yaml.safe_load(t.qos) if t.qos else [],
                    "type_description_hash": "",
                },
                "message_count": t.count,
            }
            for t in topics
        ],
        # compression lives inside the MCAP chunks (storage level), not on the file
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [mcap_name],
        "files": [{
            "path": mcap_name,
            "starting_time": {"nanoseconds_since_epoch": start},
            "duration": {"nanoseconds": duration},
            "message_count": count,
        }],
        "custom_data": {str(k): str(v) for k, v in custom_data.items()},
        "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
    }
    s = StringIO()
    yaml.safe_dump({"rosbag2_bagfile_information": info}, s, sort_keys=False)
    return s.getvalue()


class BagWriter:
    """One rosbag2/MCAP bag. Not thread-safe: call from one thread (the node's executor).

    >>> w = BagWriter("/tmp/bags/ep1_att001", custom_data={"task": "push"})
    >>> w.add_topic("/chatter", "std_msgs/msg/String")
    >>> w.write("/chatter", cdr_bytes, log_time_ns)
    >>> info = w.close({"outcome": "success"})
    """

    def __init__(self, path: str | os.PathLike, *, custom_data: Mapping[str, str] | None = None,
                 compression: str = "none", chunk_size: int = 768 * 2**10,
                 flush_period_s: float = 0.5, fsync: bool = False,
                 disk_guard: DiskGuard | None = None, mode: str = "chunked"):
        """mode "chunked" (default, what rosbag2 writes): messages grouped in indexed,
        optionally compressed chunks; the open chunk is closed and flushed every
        `flush_period_s`.
        mode "stream": no chunks (messages written as they come, no chunk index, no
        compression), the file flushed every `flush_period_s`; fewer copies per message,
        for many large images on a busy CPU.
        mode "naive": no chunks, every message written and flushed on its own (the
        benchmark's baseline)."""
        from mcap.writer import Writer

        # every argument is checked before anything is created on disk
        self.compression = check_compression(compression, mode)
        self.mode = mode
        self.path = Path(path)
        self.mcap_name = f"{self.path.name}_0.mcap"
        self._file = None
        self._locked: bool | None = None
        self._pid_start = _process_start_time(os.getpid())
        created_dir = False
        try:
            try:
                self.path.mkdir(parents=True)
                created_dir = True
            except FileExistsError:
                if not self.path.is_dir() or any(self.path.iterdir()):
                    raise BagExistsError(f"bag folder {str(self.path)!r} already exists and is not empty") from None
            # "x": never truncate a file another writer created in the meantime
            try:
                self._file = open(self.path / self.mcap_name, "xb")
            except FileExistsError:
                raise BagExistsError(f"bag file {str(self.path / self.mcap_name)!r} already exists "
                                     "(created by another writer)") from None
            # held while the bag is open: recover_incomplete_bags leaves a locked bag alone
            self._locked = _try_lock(self._file.fileno())
            self._writer = Writer(self._file, chunk_size=chunk_size,
                                  compression=_compression(self.compression), use_chunking=(mode == "chunked"))
            self._writer.start(profile="ros2", library="wvm_ros")
            self.custom_data: dict[str, str] = {k: str(v) for k, v in (custom_data or {}).items()}
            self.topics: dict[str, TopicInfo] = {}
            self._write_marker()
        except BaseException as exc:
            self._discard_partial(created_dir)
            if isinstance(exc, OSError):
                raise BagError(f"cannot create bag {str(self.path)!r}: {exc.strerror or exc}") from exc
            raise
        self._schemas: dict[str, int] = {}
        self.flush_period_s = float(flush_period_s)
        self.fsync = bool(fsync)
        self.guard = disk_guard
        self._last_flush = time.monotonic()
        self._dirty = False
        self.start_ns = 0
        self.end_ns = 0
        self.bytes_written = 0
        self.closed = False

    def _discard_partial(self, created_dir: bool) -> None:
        """Undo a failed open: close the file, remove what this writer created (no message
        was written yet), and the folder if this writer created it and it is left empty."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
            for name in (self.mcap_name, MARKER_NAME, MARKER_NAME + ".tmp"):
                try:
                    (self.path / name).unlink()
                except OSError:
                    pass
        if created_dir:
            try:
                self.path.rmdir()  # only if empty
            except OSError:
                pass
        self.closed = True

    # -- set-up
    def add_topic(self, name: str, typename: str, qos: str = "", msgdef: str | None = None) -> TopicInfo:
        if name in self.topics:
            return self.topics[name]
        typename = normalize_typename(typename)
        if typename not in self._schemas:
            definition = msgdef if msgdef is not None else message_definition(typename)
            self._schemas[typename] = self._writer.register_schema(
                name=typename, encoding="ros2msg", data=definition.encode())
        cid = self._writer.register_channel(topic=name, message_encoding="cdr",
                                            schema_id=self._schemas[typename],
                                            metadata=_qos_metadata(qos))
        t = TopicInfo(name, typename, qos, 0, cid)
        self.topics[name] = t
        self._write_marker()
        return t

    def set_custom_data(self, **kv) -> None:
        for k, v in kv.items():
            self.custom_data[k] = "" if v is None else str(v)

    # -- writing
    def write(self, topic: str, data: bytes | memoryview, log_time_ns: int,
              publish_time_ns: int | None = None) -> None:
        if self.closed:
            raise BagError(f"bag {str(self.path)!r} is closed")
        t = self.topics.get(topic)
        if t is None:
            raise BagError(f"topic {topic!r} was not added to bag {str(self.path)!r} (add_topic first)")
        n = len(data)
        if self.guard is not None:
            self.guard.check(n + 64)
        self._writer.add_message(channel_id=t.channel_id, log_time=int(log_time_ns),
                                 data=bytes(data),
                                 publish_time=int(publish_time_ns if publish_time_ns is not None else log_time_ns),
                                 sequence=t.count)
        t.count += 1
        self.bytes_written += n + 64
        if self.guard is not None:
            self.guard.add(n + 64)
        if not self.start_ns or log_time_ns < self.start_ns:
            self.start_ns = int(log_time_ns)
        self.end_ns = max(self.end_ns, int(log_time_ns))
        self._dirty = True
        if self.mode == "naive":
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            return
        self.maybe_flush()

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    def maybe_flush(self) -> bool:
        """Flush when the flush period has passed (call also from a timer)."""
        if self._dirty and time.monotonic() - self._last_flush >= self.flush_period_s:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Close the open chunk, write it out, flush the file (and fsync if asked)."""
        if self.closed:
            return
        self._writer.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._write_marker()
        self._last_flush = time.monotonic()
        self._dirty = False

    def _write_marker(self) -> None:
        marker = {
            "mcap": self.mcap_name,
            "compression": self.compression,
            "custom_data": dict(self.custom_data),
            "topics": [{"name": t.name, "type": t.typename, "qos": t.qos} for t in self.topics.values()],
            "pid": os.getpid(),
            "pid_start_unix": self._pid_start,
            "host": _HOST,
            "lock": bool(self._locked),   # the .mcap file is flock-ed while the bag is open
            "updated_unix": time.time(),
        }
        _atomic_write(self.path / MARKER_NAME, yaml.safe_dump(marker, sort_keys=False))

    def close(self, custom_data: Mapping[str, str] | None = None) -> BagInfo:
        """Finish the MCAP (summary, indexes), write metadata.yaml, drop the marker."""
        if self.closed:
            raise BagError(f"bag {str(self.path)!r} already closed")
        if custom_data:
            self.set_custom_data(**custom_data)
        self._writer.add_metadata("wvm", dict(self.custom_data))
        self._writer.finish()
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        topics = list(self.topics.values())
        # metadata.yaml and the marker's removal come before the file is closed: closing
        # releases the lock, and a bag must never look unlocked and incomplete while it is
        # being finished (recover_incomplete_bags of another process would take it)
        try:
            _atomic_write(self.path / METADATA_NAME,
                          _metadata_yaml(self.path, self.mcap_name, topics, self.start_ns, self.end_ns,
                                         self.custom_data, self.compression))
            try:
                (self.path / MARKER_NAME).unlink()
            except FileNotFoundError:
                pass
        finally:
            self._file.close()
        self.closed = True
        return BagInfo(self.path, self.message_count, {t.name: t.count for t in topics},
                       self.start_ns, self.end_ns, dict(self.custom_data))


# ----------------------------------------------------------------------------- recovery

def is_incomplete(bag_dir: str | os.PathLike) -> bool:
    d = Path(bag_dir)
    return (d / MARKER_NAME).exists() or (d.is_dir() and any(d.glob("*.mcap"))
                                          and not (d / METADATA_NAME).exists())


def _complete_records(reader):
    """The records of a possibly truncated MCAP, up to the first incomplete one. Only read
    errors end it; errors while writing the recovered copy propagate."""
    it = iter(reader.records)
    while True:
        try:
            rec = next(it)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001 - a truncated record / chunk / footer: the crash's cut
            return
        yield rec


def recover_bag(bag_dir: str | os.PathLike, outcome: str = "interrupted") -> BagInfo:
    """Make a bag left open by a crash valid: keep every complete record, rewrite the MCAP
    with its summary, write metadata.yaml (custom_data from the marker, outcome set).
    It does not check that the writer is gone (see `live_writer`); `recover_incomplete_bags`
    does, and is what a program should call."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    d = Path(bag_dir)
    marker: dict = {}
    if (d / MARKER_NAME).exists():
        try:
            marker = yaml.safe_load((d / MARKER_NAME).read_text()) or {}
        except yaml.YAMLError:
            marker = {}
    mcaps = sorted(d.glob("*.mcap"))
    if not mcaps:
        raise BagError(f"no .mcap file in bag folder {str(d)!r}; nothing to recover")
    src = d / marker.get("mcap", mcaps[0].name)
    if not src.exists():
        src = mcaps[0]
    tmp = src.with_name(src.name + ".recovering")
    qos_by_topic = {t["name"]: t.get("qos", "") for t in marker.get("topics", [])}
    schemas: dict[int, Schema] = {}
    sid_map: dict[int, int] = {}
    cid_map: dict[int, int] = {}
    topics: dict[int, TopicInfo] = {}
    start_ns, end_ns = 0, 0
    # streamed record by record (schemas and channels precede the messages that use them),
    # so a large bag is never held in memory
    with open(src, "rb") as fin, open(tmp, "wb") as f:
        w = Writer(f, compression=_compression(marker.get("compression", "none")))
        w.start(profile="ros2", library="wvm_ros")
        for rec in _complete_records(StreamReader(fin, skip_magic=False)):
            if isinstance(rec, Schema):
                schemas[rec.id] = rec
                sid_map[rec.id] = w.register_schema(rec.name, rec.encoding, rec.data)
            elif isinstance(rec, Channel) and rec.schema_id in sid_map and rec.id not in cid_map:
                cid_map[rec.id] = w.register_channel(rec.topic, rec.message_encoding, sid_map[rec.schema_id],
                                                     rec.metadata)
                topics[rec.id] = TopicInfo(rec.topic, schemas[rec.schema_id].name,
                                           qos_by_topic.get(rec.topic, rec.metadata.get("offered_qos_profiles", "")))
            elif isinstance(rec, Message) and rec.channel_id in cid_map:
                w.add_message(cid_map[rec.channel_id], rec.log_time, rec.data, rec.publish_time, rec.sequence)
                topics[rec.channel_id].count += 1
                start_ns = rec.log_time if not start_ns else min(start_ns, rec.log_time)
                end_ns = max(end_ns, rec.log_time)
        custom = {str(k): str(v) for k, v in (marker.get("custom_data") or {}).items()}
        custom["outcome"] = outcome
        custom["recovered"] = "true"
        w.add_metadata("wvm", custom)
        w.finish()
    os.replace(tmp, src)
    name = src.name
    _atomic_write(d / METADATA_NAME, _metadata_yaml(d, name, list(topics.values()), start_ns, end_ns,
                                                   custom, marker.get("compression", "none")))
    try:
        (d / MARKER_NAME).unlink()
    except FileNotFoundError:
        pass
    counts: dict[str, int] = defaultdict(int)
    for t in topics.values():
        counts[t.name] += t.count
    return BagInfo(d, sum(counts.values()), dict(counts), start_ns, end_ns, custom, recovered=True)


def _read_marker(d: Path) -> dict:
    try:
        marker = yaml.safe_load((d / MARKER_NAME).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _bag_mcap(d: Path, marker: Mapping) -> Path | None:
    name = marker.get("mcap")
    if name and (d / str(name)).is_file():
        return d / str(name)
    mcaps = sorted(d.glob("*.mcap"))
    return mcaps[0] if mcaps else None


def live_writer(bag_dir: str | os.PathLike) -> str | None:
    """Who is still writing an open bag: a description (pid, host) while a live process holds
    it, None when its writer is gone (or it has no .mcap file). Checks the writer's lock on
    the .mcap file and, where the writer could not lock (or an older writer did not), whether
    the pid in its marker is still the same running process on this host."""
    d = Path(bag_dir)
    marker = _read_marker(d)
    mcap = _bag_mcap(d, marker)
    if mcap is None:
        return None
    fd = os.open(mcap, os.O_RDONLY)
    try:
        return _live_writer_locked(marker, _try_lock(fd))
    finally:
        os.close(fd)   # releases the lock if it was taken


def _live_writer_locked(marker: Mapping, locked: bool | None) -> str | None:
    who = ", ".join(x for x in (f"pid {marker['pid']}" if marker.get("pid") is not None else "",
                                f"host {marker['host']}" if marker.get("host") else "") if x)
    if locked is False:
        return f"its .mcap file is locked by a running writer ({who or 'process unknown'})"
    if locked and marker.get("lock"):
        return None          # the writer held the lock while open: it is gone
    alive = _writer_process_alive(marker)
    if alive:
        return f"the process that opened it is still running ({alive})"
    return None


def recover_incomplete_bags(output_dir: str | os.PathLike, errors: list[str] | None = None,
                            live: list[str] | None = None) -> list[BagInfo]:
    """Recover every bag folder under `output_dir` that a crash left open, and only those: a
    bag whose writer is still running (another logger process on the same folder, or a
    respawned logger whose predecessor has not exited) is left alone and, with `live`,
    reported there (path: who writes it). The bag's lock is held during its recovery, so two
    processes never recover the same bag at once. With `errors`, a bag that cannot be
    recovered is reported there (path: reason) instead of raising."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    infos = []
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        if not is_incomplete(d):
            continue
        fd = dfd = None
        try:
            # the folder's lock is held by whoever recovers it (its .mcap file is replaced then)
            dfd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            if _try_lock(dfd) is False:
                if live is not None:
                    live.append(f"{d}: being recovered by another process; left as it is")
                continue
            mcap = _bag_mcap(d, _read_marker(d))
            if mcap is not None:
                fd = os.open(mcap, os.O_RDONLY)
                locked = _try_lock(fd)
                # read after locking: a writer rewrites its marker while it runs
                busy = _live_writer_locked(_read_marker(d), locked)
                if busy:
                    if live is not None:
                        live.append(f"{d}: still being written: {busy}; left as it is")
                    continue
                if not is_incomplete(d):   # finished (or recovered by another process) meanwhile
                    continue
            infos.append(recover_bag(d))
        except Exception as exc:  # noqa: BLE001 - reported per bag
            if errors is None:
                raise
            errors.append(f"{d}: {type(exc).__name__}: {exc}")
        finally:
            for f in (fd, dfd):
                if f is not None:
                    os.close(f)
    return infos


# ----------------------------------------------------------------------------- reading

def list_bags(paths) -> list[Path]:
    """Bag folders from a list of bag folders and/or folders that contain bag folders."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / METADATA_NAME).exists():
            found.append(p)
        elif p.is_dir():
            subs = sorted(q for q in p.iterdir() if (q / METADATA_NAME).exists())
            if not subs:
                raise BagError(f"{str(p)!r} is neither a rosbag2 folder (no metadata.yaml) nor a folder of bags")
            found += subs
        else:
            raise BagError(f"bag {str(p)!r} does not exist")
    return found


def bag_metadata(bag_dir: str | os.PathLike) -> dict:
    p = Path(bag_dir) / METADATA_NAME
    try:
        return yaml.safe_load(p.read_text())["rosbag2_bagfile_information"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise BagError(f"cannot read rosbag2 metadata {str(p)!r}: {exc}") from exc


def bag_custom_data(bag_dir: str | os.PathLike) -> dict[str, str]:
    return dict(bag_metadata(bag_dir).get("custom_data") or {})


def count_messages_rosbags(bag_dir: str | os.PathLike) -> dict[str, int]:
    """Message count per topic by reading every message with `rosbags`."""
    from rosbags.rosbag2 import Reader

    counts: dict[str, int] = defaultdict(int)
    with Reader(Path(bag_dir)) as reader:
        for conn, _t, _raw in reader.messages():
            counts[conn.topic] += 1
    return dict(counts)


def count_messages_mcap(bag_dir: str | os.PathLike) -> dict[str, int]:
    """Message count per topic by reading every message with the `mcap` reader library."""
    from mcap.reader import make_reader

    counts: dict[str, int] = defaultdict(int)
    for f in sorted(Path(bag_dir).glob("*.mcap")):
        with open(f, "rb") as s:
            for _schema, channel, _msg in make_reader(s).iter_messages():
                counts[channel.topic] += 1
    return dict(counts)


def iter_bag(bag_dir: str | os.PathLike, topics=None, definitions: bool = False) -> Iterator[tuple]:
    """(topic, type, log_time_ns, cdr bytes) in time order, via rosbags; with `definitions`,
    (topic, type, log_time_ns, cdr bytes, recorded ros2msg definition or None), for
    `deserialize(..., msgdef=)`."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(bag_dir)) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, raw in reader.messages(connections=conns):
            if definitions:
                yield conn.topic, conn.msgtype, int(t), bytes(raw), getattr(conn.msgdef, "data", None) or None
            else:
                yield conn.topic, conn.msgtype, int(t), bytes(raw)
