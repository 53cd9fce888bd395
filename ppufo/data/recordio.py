"""MXNet / insightface RecordIO without mxnet: reader, writer and the image-record header.

File layout (dmlc-core ``recordio``), little-endian:

    record  = uint32 magic 0xced7230a | uint32 lrec | data | zero padding to 4 bytes
    lrec    = cflag << 29 | length          (length = bytes of data, < 2**29)

A payload that contains the magic number at a 4-byte aligned position is written in parts,
because readers resynchronise on the magic: the magic is cut out and the pieces are written
as consecutive records with cflag 1 (first), 2 (middle), 3 (last); a record in one piece
has cflag 0. Reading glues the pieces back together with the magic in between.

The payload of an image record (``mx.recordio.pack``) is an ``IRHeader``
(uint32 flag, float32 label, uint64 id, uint64 id2; 24 bytes), then ``flag`` float32 labels
when flag > 0 (the header's own label field is then 0), then the encoded image.

``train.idx`` maps keys to byte offsets, one ``key\\toffset`` line per record.
"""
import os
import struct
import threading
import warnings
from collections import namedtuple

import numpy as np

from ..utils.errors import DataError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24

IRHeader = namedtuple("IRHeader", "flag label id id2")
IRHeader.__doc__ = ("Image-record header. ``label`` is a float when flag == 0, else a float32 "
                    "array of ``flag`` labels (as mx.recordio.unpack returns it).")


# ----------------------------------------------------------------------------- payloads

def pack(header, image_bytes=b""):
    """Payload bytes for ``header`` (IRHeader or 4-tuple) and the encoded image.

    A scalar label gives flag 0; a sequence of labels gives flag = len(labels) and the labels
    are stored after the header (the header's label field is 0), as mx.recordio.pack does.
    """
    flag, label, id_, id2 = header
    if np.ndim(label) == 0:
        head = struct.pack(IR_FORMAT, 0, float(label), int(id_), int(id2))
        return head + bytes(image_bytes)
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    if labels.size == 0:
        raise ValueError("pack: an empty label sequence cannot be stored (flag would be 0)")
    head = struct.pack(IR_FORMAT, labels.size, 0.0, int(id_), int(id2))
    return head + labels.tobytes() + bytes(image_bytes)


def unpack(payload, where="payload"):
    """(IRHeader, image bytes) from a payload; ``where`` names the record in errors."""
    if len(payload) < IR_SIZE:
        raise DataError(f"{where}: record is {len(payload)} bytes, shorter than the "
                        f"{IR_SIZE}-byte image-record header")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload, 0)
    rest = IR_SIZE
    if flag > 0:
        need = IR_SIZE + 4 * flag
        if len(payload) < need:
            raise DataError(f"{where}: header says {flag} labels ({need} bytes with the "
                            f"header) but the record holds {len(payload)} bytes")
        label = np.frombuffer(payload, dtype="<f4", count=flag, offset=IR_SIZE).astype(np.float32)
        rest = need
    return IRHeader(flag, label, id_, id2), bytes(payload[rest:])


# ----------------------------------------------------------------------------- index files

def read_index(idx_path):
    """Keys and offsets (int64 arrays, file order) from a ``key\\toffset`` index file."""
    try:
        with open(idx_path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise DataError(f"RecordIO index not found: {idx_path} (rebuild it from the .rec with "
                        f"ppufo.data.recordio.rebuild_index)") from None
    keys = offsets = None
    text = text.rstrip()
    if text:  # fast path, vectorised: every line must hold exactly two integer fields
        buf = np.frombuffer(text, np.uint8)
        newline = buf == 10
        sep = newline | (buf == 9) | (buf == 32) | (buf == 13)
        starts = ~sep
        starts[1:] &= sep[:-1]
        fields_per_line = np.bincount(np.cumsum(newline)[starts],
                                      minlength=int(newline.sum()) + 1)
        if (fields_per_line == 2).all():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = np.fromstring(text, dtype=np.int64, sep=" ")
            if values.size == 2 * fields_per_line.size:
                keys, offsets = values[0::2].copy(), values[1::2].copy()
    if keys is None and text:  # slow path finds and names the bad line
        keys, offsets = [], []
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError
                k, o = int(parts[0]), int(parts[1])
            except ValueError:
                raise DataError(f"{idx_path}: line {n} is {line[:80]!r}; expected "
                                f"'key<TAB>offset' with two integers") from None
            keys.append(k)
            offsets.append(o)
    if keys is None:
        keys, offsets = [], []
    keys, offsets = np.asarray(keys, np.int64), np.asarray(offsets, np.int64)
    if keys.size == 0:
        raise DataError(f"{idx_path}: index is empty")
    if (offsets < 0).any():
        n = int(np.argmax(offsets < 0))
        raise DataError(f"{idx_path}: line {n + 1} (key {keys[n]}) has negative offset {offsets[n]}")
    order = np.argsort(keys, kind="stable")
    dup = np.nonzero(keys[order][1:] == keys[order][:-1])[0]
    if dup.size:
        k = keys[order][dup[0]]
        raise DataError(f"{idx_path}: key {k} appears more than once")
    return keys, offsets


def write_index(idx_path, keys, offsets):
    with open(idx_path, "w") as fh:
        fh.write("".join(f"{int(k)}\t{int(o)}\n" for k, o in zip(keys, offsets)))


def scan_offsets(rec_path):
    """Byte offsets of every logical record (first part) by walking the .rec file."""
    offsets = []
    size = os.path.getsize(rec_path)
    with open(rec_path, "rb") as fh:
        pos, in_multi = 0, False
        while pos < size:
            head = fh.read(8)
            if len(head) < 8:
                raise DataError(f"{rec_path}: truncated record header at offset {pos} "
                                f"({len(head)} of 8 bytes)")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(f"{rec_path}: bad magic 0x{magic:08x} at offset {pos}; "
                                f"expected 0x{MAGIC:08x}")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if not in_multi:
                if cflag not in (0, 1):
                    raise DataError(f"{rec_path}: record at offset {pos} starts with "
                                    f"continuation flag {cflag}; expected 0 or 1")
                offsets.append(pos)
            elif cflag not in (2, 3):
                raise DataError(f"{rec_path}: part at offset {pos} has flag {cflag} inside a "
                                f"multi-part record; expected 2 or 3")
            in_multi = cflag in (1, 2)
            step = 8 + ((length + 3) & ~3)
            if pos + step > size:
                raise DataError(f"{rec_path}: record at offset {pos} needs {step} bytes but "
                                f"the file ends after {size - pos}")
            pos += step
            fh.seek(pos)
        if in_multi:
            raise DataError(f"{rec_path}: file ends inside a multi-part record")
    return offsets


def rebuild_index(rec_path, idx_path=None):
    """Write an index with keys 0..n-1 in file order (insightface's face2rec numbering)."""
    idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
    offsets = scan_offsets(rec_path)
    write_index(idx_path, range(len(offsets)), offsets)
    return idx_path


# ----------------------------------------------------------------------------- reader

class RecordIOReader:
    """Random access to an indexed RecordIO file.

    ``keys``: int64 array of the index keys in index-file order. ``read(key)`` ->
    (IRHeader, image bytes); ``read_raw(key)`` -> the whole payload. The file is opened on
    first use in each process (a forked DataLoader worker reopens it; the object also
    pickles without its handle), and reads use ``os.pread`` so threads never share a
    file position.
    """

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        if not os.path.isfile(rec_path):
            raise DataError(f"RecordIO file not found: {rec_path}")
        self.keys, self.offsets = read_index(self.idx_path)
        self.file_size = os.path.getsize(rec_path)
        bad = np.nonzero(self.offsets + 8 > self.file_size)[0]
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{self.idx_path}: key {self.keys[i]} points to offset "
                            f"{self.offsets[i]}, past the end of {rec_path} "
                            f"({self.file_size} bytes)")
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted_keys = self.keys[self._order]
        self._fd, self._pid = None, None
        self._lock, self._seek_lock = threading.Lock(), threading.Lock()

    def __len__(self):
        return int(self.keys.size)

    def __contains__(self, key):
        return self._position(key) is not None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_fd=None, _pid=None, _lock=None, _seek_lock=None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._seek_lock = threading.Lock(), threading.Lock()

    def __del__(self):
        self.close()

    def close(self):
        fd, pid = getattr(self, "_fd", None), getattr(self, "_pid", None)
        if fd is not None and pid == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = None

    def _handle(self):
        if self._fd is None or self._pid != os.getpid():
            with self._lock:
                if self._fd is None or self._pid != os.getpid():
                    # a handle inherited through fork belongs to the parent; never share it
                    self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                    self._pid = os.getpid()
        return self._fd

    def _pread(self, n, offset):
        fd = self._handle()
        if hasattr(os, "pread"):
            return os.pread(fd, n, offset)
        with self._seek_lock:  # platforms without pread (Windows)
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, n)

    def _position(self, key):
        try:
            key = int(key)
        except (TypeError, ValueError):
            return None
        i = int(np.searchsorted(self._sorted_keys, key))
        if i < self._sorted_keys.size and self._sorted_keys[i] == key:
            return int(self._order[i])
        return None

    def offset(self, key):
        pos = self._position(key)
        if pos is None:
            raise DataError(f"{self.rec_path}: key {key!r} is not in the index {self.idx_path}")
        return int(self.offsets[pos])

    def read_raw(self, key):
        """The payload of record ``key`` with multi-part records joined."""
        start = self.offset(key)
        return self.read_at(start, key)

    def read_at(self, start, key=None):
        where = f"{self.rec_path}: record {key} at offset {start}" if key is not None \
            else f"{self.rec_path}: record at offset {start}"
        parts, pos, first = [], start, True
        while True:
            head = self._pread(8, pos)
            if len(head) < 8:
                raise DataError(f"{where}: truncated part header at offset {pos} "
                                f"({len(head)} of 8 bytes; file size {self.file_size})")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise DataError(f"{where}: bad magic 0x{magic:08x} at offset {pos}; expected "
                                f"0x{MAGIC:08x} (index offset wrong or file corrupt)")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            if first and cflag not in (0, 1):
                raise DataError(f"{where}: starts with continuation flag {cflag}; expected 0 "
                                f"(whole record) or 1 (first part)")
            if not first and cflag not in (2, 3):
                raise DataError(f"{where}: part at offset {pos} has flag {cflag}; expected 2 "
                                f"or 3 inside a multi-part record")
            data = self._pread(length, pos + 8) if length else b""
            if len(data) < length:
                raise DataError(f"{where}: truncated: part at offset {pos} declares {length} "
                                f"bytes but only {len(data)} remain in the file")
            parts.append(data)
            if cflag in (0, 3):
                break
            pos += 8 + ((length + 3) & ~3)
            first = False
        return _MAGIC_BYTES.join(parts)

    def read(self, key):
        """(IRHeader, image bytes) of record ``key``."""
        payload = self.read_raw(key)
        return unpack(payload, f"{self.rec_path}: record {key} at offset {self.offset(key)}")

    def read_header(self, key):
        return self.read(key)[0]

    def read_labels(self, keys, n=1, chunk=131072):
        """The first ``n`` labels of many records, vectorised (memory-mapped gathers).

        Returns (labels float32 [len(keys), n], flags uint32). For flag == 0 the header's
        scalar label is column 0; columns a record does not have are NaN. Cost: one
        (32 + 4n)-byte gather per record, no per-record Python; the OS reads each page
        holding a record start, which for small images is one sequential pass over the
        file (MS1M-V3: 5.2 M records). Records that need care -- headers cut by the
        multi-part rule (magic inside the header) or errors -- take the exact path,
        which raises DataError naming the key and offset.
        """
        keys = np.asarray(keys, np.int64).reshape(-1)
        labels = np.full((keys.size, n), np.nan, np.float32)
        flags = np.zeros(keys.size, np.uint32)
        if keys.size == 0:
            return labels, flags
        idx = np.minimum(np.searchsorted(self._sorted_keys, keys), self._sorted_keys.size - 1)
        missing = np.nonzero(self._sorted_keys[idx] != keys)[0]
        if missing.size:
            raise DataError(f"{self.rec_path}: key {keys[missing[0]]} is not in the index "
                            f"{self.idx_path}")
        offs = self.offsets[self._order[idx]]
        width = 8 + IR_SIZE + 4 * n
        span = np.arange(width, dtype=np.int64)
        col = np.arange(n)
        mm = np.memmap(self.rec_path, dtype=np.uint8, mode="r")
        try:
            for s in range(0, keys.size, chunk):
                o = offs[s:s + chunk]
                raw = np.ascontiguousarray(mm[np.minimum(o[:, None] + span, self.file_size - 1)])
                words = raw[:, :8 + IR_SIZE].view("<u4")  # magic, lrec, flag, label, ids
                magic, lrec, flag = words[:, 0], words[:, 1], words[:, 2]
                scalar = words[:, 3:4].view("<f4")[:, 0]
                extra = raw[:, 8 + IR_SIZE:].view("<f4")
                cflag, length = lrec >> 29, (lrec & _LEN_MASK).astype(np.int64)
                have = np.minimum(flag, n).astype(np.int64)
                need = IR_SIZE + 4 * have
                fast = ((magic == MAGIC) & (o + width <= self.file_size) & (length >= need)
                        & ((cflag == 1) | (cflag == 0) & (o + 8 + length <= self.file_size)))
                block = np.where(col[None, :] < have[:, None], extra, np.float32(np.nan))
                block[:, 0] = np.where(flag > 0, block[:, 0], scalar)
                labels[s:s + chunk] = block
                flags[s:s + chunk] = flag
                for j in np.nonzero(~fast)[0]:
                    h, _ = self.read(int(keys[s + j]))
                    lab = np.atleast_1d(np.asarray(h.label, np.float32))[:n]
                    labels[s + j] = np.nan
                    labels[s + j, :lab.size] = lab
                    flags[s + j] = h.flag
        finally:
            del mm
        return labels, flags


# ----------------------------------------------------------------------------- writer

class RecordIOWriter:
    """Writes an indexed RecordIO file byte-compatible with MXNet's MXIndexedRecordIO."""

    def __init__(self, rec_path, idx_path=None):
        self.rec_path = rec_path
        self.idx_path = idx_path or os.path.splitext(rec_path)[0] + ".idx"
        self._fh = open(rec_path, "wb")
        self._keys, self._offsets, self._keyset = [], [], set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, key, payload):
        """Append one record under ``key``; splits around aligned magic words like dmlc."""
        key = int(key)
        if key in self._keyset:
            raise ValueError(f"{self.rec_path}: key {key} written twice")
        buf = bytes(payload)
        n = len(buf)
        if n >= 1 << 29:
            raise ValueError(f"{self.rec_path}: record {key} is {n} bytes; RecordIO allows < 2**29")
        self._keys.append(key)
        self._keyset.add(key)
        self._offsets.append(self._fh.tell())
        out, dptr = [], 0
        words = np.frombuffer(buf[: n - n % 4], dtype="<u4")
        for w in np.nonzero(words == MAGIC)[0]:
            i = int(w) * 4
            out.append(struct.pack("<II", MAGIC, (1 if dptr == 0 else 2) << 29 | (i - dptr)))
            out.append(buf[dptr:i])
            dptr = i + 4
        out.append(struct.pack("<II", MAGIC, (3 if dptr else 0) << 29 | (n - dptr)))
        out.append(buf[dptr:])
        out.append(b"\0" * ((4 - n % 4) % 4))
        self._fh.write(b"".join(out))

    def write_image(self, key, header, image_bytes):
        self.write(key, pack(header, image_bytes))

    def close(self):
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
            write_index(self.idx_path, self._keys, self._offsets)
