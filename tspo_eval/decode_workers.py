"""Decoding in worker processes, for `ExtractConfig.decode_processes`.

Each extraction reader thread borrows a worker process for one batch of frame numbers at a
time (the same worker again when it is free, which still has the file open and decodes on
from where it stopped); the worker decodes into a memory-mapped file that the parent owns
(in /dev/shm where there is one), so only frame numbers and a shape cross the pipe, never
pixels. A reader gives its worker back before it waits for room in its video's queue: a
video decoded ahead, whose queue is full, then never holds the workers the video being
encoded needs (holding them was a deadlock). Why: PyAV's
per-packet Python work needs Python's lock, so PyAV threads in one process do not scale,
while processes do; and a worker that crashes on a bad file costs that video, not the run.

Workers are started on first use (fresh interpreters: the parent holds CUDA and threads), at most
`limit` of them, and kept for later videos until the parent exits. A block's name carries
its owner's pid, and the owner holds a lock on it: blocks left by a killed process (kill -9
runs no clean-up) are deleted by the next process that makes a block, never a live one's.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import logging
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np

from .video import FrameReader, Probe, VideoError

log = logging.getLogger(__name__)

_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory-backed where it exists
_BLOCK_NAME = re.compile(r"tspo-decode-(\d+)-")  # tspo-decode-<owner pid>-<random>
_ROOM_FOR_BLOCKS = 32  # /dev/shm is used when it has room for this many blocks (workers) at once
_swept = False  # this process has cleaned up after killed ones
_python = sys.executable  # the workers' interpreter
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 1 << 20
_buffers_returned = False


class _Block:
    """A buffer both processes map: a file the parent creates, sizes, locks and deletes.
    (Python's SharedMemory would also work, but its resource tracker complains when the block
    is shared between parent and children.)"""

    def __init__(self, size: int) -> None:
        global _swept
        with _blocks_lock:  # made and registered at once, or not at all once the clean-up at exit began
            if _blocks is None:
                raise VideoError("extraction is stopping: no new decoding block")
            if not _swept:
                _swept = True
                sweep_stale_blocks()
            self.fd, self.path = tempfile.mkstemp(prefix=f"tspo-decode-{os.getpid()}-", dir=_block_folder(size))
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH)  # in use: see sweep_stale_blocks
                os.ftruncate(self.fd, size)
                self.size = size
                self.array = np.memmap(self.path, np.uint8, "r+", shape=(size,))
            except BaseException:
                os.close(self.fd)
                os.unlink(self.path)
                raise
            _blocks.add(self)

    def close(self) -> None:
        with _blocks_lock:
            if self.fd < 0:  # closed already (by its worker, or by the clean-up at exit)
                return
            with contextlib.suppress(BufferError):  # a view still alive: its mapping goes with it
                self.array._mmap.close()  # release the mapping now, not at garbage collection
            os.unlink(self.path)
            os.close(self.fd)
            self.fd = -1
            if _blocks is not None:
                _blocks.discard(self)


# Every block alive in this process. At exit (Ctrl-C, SIGTERM included) the workers are closed with
# their blocks, but a reader thread may be making a block for its worker at that moment: the
# registry makes sure that one goes too (None: the clean-up began, no block is made any more).
_blocks: set[_Block] | None = set()
_blocks_lock = threading.RLock()


def _close_blocks() -> None:
    global _blocks
    with _blocks_lock:
        left, _blocks = _blocks or set(), None
    for block in left:
        block.close()


def _block_folder(size: int) -> str:
    """/dev/shm when it has room for a block per worker at once, else the temp folder (a container's
    /dev/shm is often 64 MB: a worker writing past it would die of SIGBUS)."""
    if _SHM is not None:
        with contextlib.suppress(OSError):
            free = os.statvfs(_SHM)
            if free.f_bavail * free.f_frsize >= _ROOM_FOR_BLOCKS * size:
                return _SHM
    return tempfile.gettempdir()


def sweep_stale_blocks(folder: str | None = None) -> list[str]:
    """Delete the blocks that processes killed before their clean-up left in `folder` (default:
    both folders blocks are made in); returns their paths.

    A block is deleted only when the pid in its name is not running here AND nobody holds its
    lock: a live owner always holds it (so a pid reused since, or a process in another pid
    namespace sharing the folder, keeps its block), and the lock goes with the owner's death.
    """
    if folder is None:
        return [path for where in dict.fromkeys(filter(None, [_SHM, tempfile.gettempdir()]))
                for path in sweep_stale_blocks(where)]
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _BLOCK_NAME.match(name)
        if match is None or pid_running(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone already, or not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while any owner holds it
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d decoding blocks left by killed processes in %s", len(removed), folder)
    return removed


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when process `pid` ends; None where the system has none
    (not Linux, or a sandbox without pidfd_open): the pipe's end of file then tells alone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def pid_running(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _worker_program(fd: int) -> str:
    """A worker's `python -c` program: this package loaded from these files (not from whatever the
    path finds first), then the serving loop on the socket `fd`."""
    package = Path(__file__).resolve().parent
    return ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location({__package__!r}, {str(package / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(package)!r}]); "
            "sys.modules[spec.name] = package = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(package); "
            f"from {__name__} import _worker_main; _worker_main({fd})")


class DecodeWorker:
    """One worker process and the memory-mapped block it decodes into.

    The worker is a fresh interpreter that imports only this module, not the parent's main
    module as multiprocessing's spawn does (for `tspo-eval` that is torch and transformers:
    seconds and hundreds of MB per worker). It loads this package from the parent's own files
    (`_worker_program`), whatever its path holds: `python -c` puts the working directory first, and a
    clone of another version there would otherwise answer the parent in another protocol."""

    reply_timeout_s = 300.0  # a read of one run far exceeding this means the decoder hangs

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen([_python, "-c", _worker_program(theirs.fileno())],
                                            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        # readable once the process has ended, whatever became of the pipe (Linux; else the pipe alone)
        self.sentinel = _pidfd(self.process.pid)
        self.block: _Block | None = None
        self.opened: tuple | None = None  # the reader the worker has open (it then needs no index)

    def read(self, path: str, reader_args: dict, frame_numbers: np.ndarray,
             frame_shape: tuple[int, int, int]) -> np.ndarray:
        """The frames as a view of the shared block: valid until the next `read`."""
        nbytes = len(frame_numbers) * int(np.prod(frame_shape))
        if self.block is None or self.block.size < nbytes:
            self._replace_block(nbytes)
        key = _reader_key(path, reader_args)
        args = {**reader_args, "index": None} if key == self.opened else reader_args
        shape = (len(frame_numbers), *frame_shape)
        self._ask(path, key, ("read", path, args, np.asarray(frame_numbers), self.block.path, self.block.size, shape))
        return self.block.array[:nbytes].reshape(shape)

    def probe(self, path: str, reader_args: dict, fps: float, max_frames: int | None) -> Probe:
        """`path` opened and probed in the worker (its candidates, keyframes and packet index), the file
        left open there for reads with these `reader_args`: demuxing a whole file is a Python loop per packet, which in
        the parent would hold Python's lock against the thread launching the encoder's kernels
        (measured on the H200: the parent's wait for probes was half the extraction loop)."""
        return self._ask(path, _reader_key(path, reader_args), ("probe", path, reader_args, fps, max_frames))

    def _ask(self, path: str, key: tuple, request: tuple) -> object:
        """Send `request`, wait for its answer; the worker then has `key`'s reader open."""
        try:
            self.conn.send(request)
            # the process's sentinel as well as the pipe: a death is seen at once even where the
            # pipe's other end outlives the worker (e.g. inherited by a forked process)
            ready = wait([self.conn] + ([self.sentinel] if self.sentinel is not None else []),
                         self.reply_timeout_s)
            answered = bool(ready)
            if self.conn in ready:
                status, payload = self.conn.recv()
            elif ready:
                raise EOFError(f"exit code {self.process.wait()}")
        except (EOFError, OSError) as err:
            self.close()
            raise VideoError(f"{path}: the decoding process died ({err or 'no reply'}); the file may crash "
                             "the decoder: re-encode it, or try the other --backend") from err
        if not answered:
            self.close(kill=True)
            raise VideoError(f"{path}: the decoding process gave no answer in {self.reply_timeout_s:g} s and was "
                             "stopped; the file may hang the decoder: re-encode it, or try the other --backend")
        if status == "error":
            self.opened = None
            raise payload
        self.opened = key
        return payload

    def _replace_block(self, nbytes: int) -> None:
        self._drop_block()
        self.block = _Block(max(nbytes, 1 << 20))

    def _drop_block(self) -> None:
        if self.block is not None:
            self.block.close()
            self.block = None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.conn.closed

    def close(self, kill: bool = False) -> None:
        """Stop the worker (closing the pipe ends its loop; `kill` for one that does not listen)."""
        if not self.conn.closed:
            self.conn.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None
        self._drop_block()


class _Pool:
    """Idle workers, lent one at a time for one read; at most `limit` exist (others wait for one)."""

    def __init__(self) -> None:
        self.idle: list[DecodeWorker] = []
        self.started: list[DecodeWorker] = []  # every worker alive, lent or idle: closed at exit
        self.count = 0
        self.changed = threading.Condition()

    @contextmanager
    def lend(self, limit: int, prefer: DecodeWorker | None = None) -> Iterator[DecodeWorker]:
        """A worker for one read (`prefer`, the one the caller had last, if it is idle: its file is
        open where the caller stopped). Give it back before waiting on anything else."""
        with self.changed:
            while not self.idle and self.count >= limit:
                self.changed.wait()
            if self.idle:
                worker = prefer if prefer in self.idle else self.idle[-1]
                self.idle.remove(worker)
            else:
                self.count += 1
                worker = None
        if worker is None:
            try:
                worker = DecodeWorker()
            except BaseException:
                self._give_back(None)
                raise
            with self.changed:
                self.started.append(worker)
        try:
            yield worker
        finally:
            if not worker.alive:  # it died on a file: a fresh one is started when next needed
                worker.close()
                worker = None
            self._give_back(worker)

    def _give_back(self, worker: DecodeWorker | None) -> None:
        with self.changed:
            if worker is None:
                self.count -= 1
            else:
                self.idle.append(worker)
            self.started = [w for w in self.started if w.alive]
            self.changed.notify()

    def close(self) -> None:
        """Stop every worker and delete its block (at exit, also those still lent)."""
        with self.changed:
            workers, self.started, self.idle, self.count = self.started, [], [], 0
        for worker in workers:
            worker.close()


POOL = _Pool()
atexit.register(_close_blocks)  # runs after POOL.close (atexit runs last registered first)
atexit.register(POOL.close)


def _reader_key(path: str, reader_args: dict) -> tuple:
    """What identifies an open reader (the index only spares the opening)."""
    return path, reader_args["backend"], reader_args["num_threads"], reader_args["size"]


def _serve(conn: Connection) -> None:
    """Worker loop until the parent closes the pipe: ("read", path, reader args, frame numbers, block
    path, block size, frames' shape) -> ("ok", None), the frames decoded straight into the block;
    ("probe", path, reader args, fps, max frames) -> ("ok", Probe); a failure -> ("error", exception)."""
    readers: dict[tuple, FrameReader] = {}
    block, block_path = None, None
    while True:
        try:
            kind, path, reader_args, *rest = conn.recv()
        except (EOFError, OSError):
            break
        key = _reader_key(path, reader_args)
        try:
            if key not in readers:
                if len(readers) >= 4:  # videos decoded at once (prefetch), with room to spare
                    readers.pop(next(iter(readers))).close()
                readers[key] = FrameReader(path, **reader_args)
            if kind == "probe":
                reply = ("ok", Probe.of(readers[key], *rest))
            else:
                frame_numbers, wanted_path, size, shape = rest
                if wanted_path != block_path:
                    block, block_path = np.memmap(wanted_path, np.uint8, "r+", shape=(size,)), wanted_path
                readers[key].read(frame_numbers, out=block[:math.prod(shape)].reshape(shape))
                reply = ("ok", None)
        except Exception as err:  # noqa: BLE001 - any failure goes back to the parent, which records it
            stale = readers.pop(key, None)
            if stale is not None:
                stale.close()
            reply = ("error", err)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            break
        except Exception as err:  # noqa: BLE001 - an exception that cannot be pickled: send its text
            conn.send(("error", VideoError(f"{path}: {type(err).__name__}: {err}")))
    for reader in readers.values():
        reader.close()


def return_freed_buffers() -> None:
    """Make glibc give every buffer of 1 MiB or more back to the system when it is freed (once per
    process; elsewhere nothing). By default glibc raises that threshold to the size of each large
    block freed, so the frame arrays that follow come from its heap and stay in the process after
    they are freed: measured, memory then grew with the number of reads, i.e. with video length."""
    global _buffers_returned
    if _buffers_returned or not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    _buffers_returned = True
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def _worker_main(fd: int) -> None:
    """A worker process: serve the parent over the socket `fd` until it closes it."""
    return_freed_buffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes the pipe
    _serve(Connection(fd))
