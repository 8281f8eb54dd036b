"""Decoding in worker processes, for `ExtractConfig.decode_processes`.

Each extraction reader thread borrows one worker process and hands it runs of frame
numbers; the worker decodes them with its own `FrameReader` (kept open for the next run of
the same video) into a memory-mapped file that the parent owns (in /dev/shm where there
is one), so only frame numbers and a shape cross the pipe, never pixels. Why: PyAV's
per-packet Python work needs Python's lock, so PyAV threads in one process do not scale,
while processes do; and a worker that crashes on a bad file costs that video, not the run.

Workers are started on first use (spawned: the parent holds CUDA and threads), at most
`limit` of them, and kept for later videos until the parent exits.
"""
from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection

import numpy as np

from .video import FrameReader, VideoError

_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory-backed where it exists


class _Block:
    """A buffer both processes map: a file the parent creates, sizes and deletes. (Python's
    SharedMemory would also work, but its resource tracker complains when the block is shared
    between parent and children.)"""

    def __init__(self, size: int) -> None:
        fd, self.path = tempfile.mkstemp(prefix="tspo-decode-", dir=_SHM)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.size = size
        self.array = np.memmap(self.path, np.uint8, "r+", shape=(size,))

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # a view still alive: its mapping goes with it
            self.array._mmap.close()  # release the mapping now, not at garbage collection
        os.unlink(self.path)


class DecodeWorker:
    """One worker process and the memory-mapped block it decodes into."""

    reply_timeout_s = 300.0  # a read of one run far exceeding this means the decoder hangs

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child,), daemon=True, name="tspo-decode")
        self.process.start()
        child.close()
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
        try:
            self.conn.send((path, args, np.asarray(frame_numbers), self.block.path, self.block.size))
            answered = self.conn.poll(self.reply_timeout_s)
            if answered:
                status, payload = self.conn.recv()
        except (EOFError, OSError) as err:
            self.close()
            raise VideoError(f"{path}: the decoding process died ({err or 'no reply'}); the file may crash "
                             "the decoder: re-encode it, or try the other --backend") from err
        if not answered:
            self.close(kill=True)
            raise VideoError(f"{path}: the decoding process gave no frames in {self.reply_timeout_s:g} s and was "
                             "stopped; the file may hang the decoder: re-encode it, or try the other --backend")
        if status == "error":
            self.opened = None
            raise payload
        self.opened = key
        return self.block.array[:int(np.prod(payload))].reshape(payload)

    def _replace_block(self, nbytes: int) -> None:
        self._drop_block()
        self.block = _Block(max(nbytes, 1 << 20))

    def _drop_block(self) -> None:
        if self.block is not None:
            self.block.close()
            self.block = None

    @property
    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed

    def close(self, kill: bool = False) -> None:
        """Stop the worker (closing the pipe ends its loop; `kill` for one that does not listen)."""
        if not self.conn.closed:
            self.conn.close()
        if kill:
            self.process.kill()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._drop_block()


class _Pool:
    """Idle workers, lent one at a time; at most `limit` exist (others wait for one)."""

    def __init__(self) -> None:
        self.idle: list[DecodeWorker] = []
        self.started: list[DecodeWorker] = []  # every worker alive, lent or idle: closed at exit
        self.count = 0
        self.changed = threading.Condition()

    @contextmanager
    def lend(self, limit: int) -> Iterator[DecodeWorker]:
        with self.changed:
            while not self.idle and self.count >= limit:
                self.changed.wait()
            if self.idle:
                worker = self.idle.pop()
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
atexit.register(POOL.close)


def _reader_key(path: str, reader_args: dict) -> tuple:
    """What identifies an open reader (the index only spares the opening)."""
    return path, reader_args["backend"], reader_args["num_threads"], reader_args["size"]


def _serve(conn: Connection) -> None:
    """Worker loop: (path, reader args, frame numbers, block path, block size) in, ("ok", shape)
    or ("error", exception) out, until the parent closes the pipe."""
    readers: dict[tuple, FrameReader] = {}
    block, block_path = None, None
    while True:
        try:
            path, reader_args, frame_numbers, wanted_path, size = conn.recv()
        except (EOFError, OSError):
            break
        key = _reader_key(path, reader_args)
        try:
            if wanted_path != block_path:
                block, block_path = np.memmap(wanted_path, np.uint8, "r+", shape=(size,)), wanted_path
            if key not in readers:
                if len(readers) >= 4:  # videos decoded at once (prefetch), with room to spare
                    readers.pop(next(iter(readers))).close()
                readers[key] = FrameReader(path, **reader_args)
            frames = readers[key].read(frame_numbers)
            if frames.nbytes > size:
                raise VideoError(f"{path}: decoded frames are {frames.shape[1:]}, larger than the probe "
                                 "reported; re-encode the file")
            block[:frames.nbytes] = frames.reshape(-1)
            reply = ("ok", frames.shape)
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
