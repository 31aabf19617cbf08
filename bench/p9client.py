"""A minimal 9P2000.L client over a stream socket, enough to read and write
one file sequentially (version, attach, walk, lcreate, lopen, read, write,
fsync, clunk), one request in flight like the kernel's client under one dd.
bench_9p_pieces.py uses it to measure diod alone on a socketpair: the
host's kernel may have no 9p file system to mount trans=fd with.
"""

import struct

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
RLERROR = 7
TLOPEN, TLCREATE, TFSYNC = 12, 14, 50
TVERSION, TATTACH, TWALK, TREAD, TWRITE, TCLUNK = 100, 104, 110, 116, 118, 120


class P9Error(Exception):
    pass


def _s(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b


class Client:
    def __init__(self, sock, msize=65536):
        self.sock = sock
        self.buf = bytearray(msize + 4096)
        r = self.rpc(TVERSION, struct.pack("<I", msize) + _s("9P2000.L"), tag=NOTAG)
        self.msize = struct.unpack_from("<I", r, 0)[0]
        self.iounit = self.msize - 24  # size, type, tag, fid, offset, count headers

    def _recv_exact(self, view):
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise P9Error("server closed the connection")
            got += n

    def rpc(self, mtype, body, tag=1):
        hdr = struct.pack("<IBH", 7 + len(body), mtype, tag)
        self.sock.sendall(hdr + body)
        mv = memoryview(self.buf)
        self._recv_exact(mv[:7])
        size, rtype, rtag = struct.unpack_from("<IBH", self.buf, 0)
        self._recv_exact(mv[7:size])
        if rtype == RLERROR:
            errno = struct.unpack_from("<I", self.buf, 7)[0]
            raise P9Error("Rlerror errno %d for type %d" % (errno, mtype))
        if rtype != mtype + 1 or rtag != tag:
            raise P9Error("unexpected reply type %d tag %d to %d" % (rtype, rtag, mtype))
        return mv[7:size]

    def attach(self, fid, aname, uname="root", n_uname=0):
        self.rpc(TATTACH, struct.pack("<II", fid, NOFID) + _s(uname) + _s(aname) +
                 struct.pack("<I", n_uname))

    def walk(self, fid, newfid, names=()):
        self.rpc(TWALK, struct.pack("<IIH", fid, newfid, len(names)) +
                 b"".join(_s(n) for n in names))

    def lcreate(self, fid, name, flags=0o1 | 0o1000, mode=0o644, gid=0):
        """fid (a directory) becomes the new file, opened (O_WRONLY|O_TRUNC)."""
        self.rpc(TLCREATE, struct.pack("<I", fid) + _s(name) + struct.pack("<III", flags, mode,
                                                                           gid))

    def lopen(self, fid, flags=0):
        self.rpc(TLOPEN, struct.pack("<II", fid, flags))

    def read(self, fid, offset, count):
        r = self.rpc(TREAD, struct.pack("<IQI", fid, offset, count))
        return struct.unpack_from("<I", r, 0)[0]

    def write(self, fid, offset, data):
        r = self.rpc(TWRITE, struct.pack("<IQI", fid, offset, len(data)) + data)
        return struct.unpack_from("<I", r, 0)[0]

    def fsync(self, fid):
        self.rpc(TFSYNC, struct.pack("<II", fid, 0))

    def clunk(self, fid):
        self.rpc(TCLUNK, struct.pack("<I", fid))
