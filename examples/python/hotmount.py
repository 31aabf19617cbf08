# SPDX-License-Identifier: LGPL-2.1-or-later
"""hotmount: a small ctypes binding of libhotmount's client side.

Talks to hotmountd over its unix socket (INSTANCE/hotmountd.sock) through
libhotmount.so.0, the same calls the `hotmount` CLI makes:

    import hotmount
    with hotmount.Client("myvm") as c:          # a name or an instance dir
        m = c.add("/srv/src", "/mnt/src", writable=True)
        print(m.id, m.state, m.tag)
        for m in c.list():
            print(m.guest_path, "<-", m.host_path)
        print(c.status()["slotsFree"])
        c.remove("/mnt/src")

Errors raise a HotmountError subclass chosen by the library's code (see
include/hotmount/error.h): InvalidError, ExistsError, NotFoundError,
NoSlotError, NotReadyError, ... Their str() is the library's message; .code is
the HM_E_* value, .errno the errno for errno-backed codes (else None).

The library is found through $HOTMOUNT_LIB (a path), else
ctypes.util.find_library("hotmount"), else the soname libhotmount.so.0 on the
loader's path; load(path) picks one explicitly. Python 3.9+, stdlib only.
"""

import ctypes
import ctypes.util
import dataclasses
import json
import os
import threading
from typing import Dict, List, Optional, Union

__all__ = [
    "AgentError", "AuthError", "BusyError", "Client", "ExistsError", "HelperError", "HotmountError",
    "HotmountIOError", "HotmountOSError", "InternalError", "InvalidError", "Mount",
    "NoMemoryError", "NoSlotError", "NotFoundError", "NotReadyError", "PermError",
    "ProtocolError", "QMPError", "TimedOutError", "UnsupportedError", "instance_dir", "load",
    "strerror", "version", "version_number",
]

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# include/hotmount/mount.h and instance.h
HM_REMOVE_LAZY = 1
HM_REMOVE_FORCE = 2

# ---------------------------------------------------------------------------
# Errors


class HotmountError(Exception):
    """A libhotmount error. str() is the library's message (it starts with
    the function that failed); .code is the HM_E_* value (negative); .errno is
    the errno for the errno-backed codes, None for the library's own;
    .error_class is where it came from (hm_error_class_name: "qmp", "agent",
    "http", ... or "none") and .detail the peer's own name for it (QMP's
    error class, "DeviceNotFound"), or None. Decide by these, not by str()."""

    code = 0
    error_class = "none"
    detail: Optional[str] = None

    def __init__(self, message: str, code: Optional[int] = None,
                 error_class: str = "none", detail: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.detail = detail
        if code is not None:
            self.code = code
        # HM_E_* of the library's own start at -4001; the rest are -errno.
        self.errno = -self.code if -4000 < self.code < 0 else None
        if isinstance(self, OSError):
            self.strerror = message

    def __str__(self) -> str:
        return self.message


class InvalidError(HotmountError, ValueError):
    """HM_E_INVALID: bad input (request, path, option)."""
    code = -22


class NoMemoryError(HotmountError, MemoryError):
    """HM_E_NOMEM."""
    code = -12


class ExistsError(HotmountError, FileExistsError):
    """HM_E_EXISTS: the mount point is already in use."""
    code = -17


class NotFoundError(HotmountError, FileNotFoundError):
    """HM_E_NOT_FOUND: no such mount."""
    code = -2


class NoSlotError(HotmountError, OSError):
    """HM_E_NO_SLOT: no free hot-plug slot."""
    code = -28


class NotReadyError(HotmountError, ConnectionError):
    """HM_E_NOT_READY: hotmountd, the VM (QMP) or the guest agent is not
    reachable. With no daemon the message says how to start it."""
    code = -107


class TimedOutError(HotmountError, TimeoutError):
    """HM_E_TIMEOUT."""
    code = -110


class HotmountIOError(HotmountError, OSError):
    """HM_E_IO."""
    code = -5


class PermError(HotmountError, PermissionError):
    """HM_E_PERM: the caller is not allowed."""
    code = -1


class UnsupportedError(HotmountError, OSError):
    """HM_E_UNSUPPORTED: the transport or backend cannot do it."""
    code = -95


class BusyError(HotmountError, OSError):
    """HM_E_BUSY: an operation is in progress on that mount."""
    code = -16


class HotmountOSError(HotmountError, OSError):
    """Any other -errno code."""


class ProtocolError(HotmountError):
    """HM_E_PROTOCOL: a peer sent something malformed."""
    code = -4001


class QMPError(HotmountError):
    """HM_E_QMP: QEMU answered a command with an error."""
    code = -4002


class AgentError(HotmountError):
    """HM_E_AGENT: the guest agent reported a failure."""
    code = -4003


class HelperError(HotmountError):
    """HM_E_HELPER: a helper process (virtiofsd, diod, ...) failed."""
    code = -4004


class InternalError(HotmountError):
    """HM_E_INTERNAL: a bug in libhotmount."""
    code = -4005


class AuthError(HotmountError):
    """HM_E_AUTH: SSH: the guest's host key is not trusted, or the login was
    refused (reverse-sshfs)."""
    code = -4006


_ERRORS = {cls.code: cls for cls in (
    InvalidError, NoMemoryError, ExistsError, NotFoundError, NoSlotError, NotReadyError,
    TimedOutError, HotmountIOError, PermError, UnsupportedError, BusyError, ProtocolError,
    QMPError, AgentError, HelperError, InternalError, AuthError)}


def _error_for(code: int, message: str, error_class: str = "none",
               detail: Optional[str] = None) -> HotmountError:
    cls = _ERRORS.get(code)
    if cls is None:
        cls = HotmountOSError if -4000 < code < 0 else HotmountError
    return cls(message, code, error_class, detail)


# ---------------------------------------------------------------------------
# The library


class _Opaque(ctypes.Structure):
    pass


class _Error(_Opaque):
    pass


class _Client(_Opaque):
    pass


class _Spec(_Opaque):
    pass


class _Mount(_Opaque):
    pass


class _MountList(_Opaque):
    pass


class _Status(_Opaque):
    pass


_P = ctypes.POINTER
_ErrP = _P(_Error)
_ErrPP = _P(_ErrP)
_c_int, _c_uint, _c_size, _c_char_p = ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_char_p
# Strings the caller must free (with hm_free): kept as raw pointers, never c_char_p (which
# would copy and lose the pointer).
_MallocStr = _P(ctypes.c_char)

# name: (restype, argtypes). Every function the binding calls is here, so
# each one has its prototype set before use (64-bit pointers and size_t).
_PROTOTYPES = {
    "hm_version": (_c_char_p, []),
    "hm_version_number": (_c_uint, []),
    "hm_strerror": (_c_char_p, [_c_int]),
    "hm_error_code": (_c_int, [_ErrP]),
    "hm_error_message": (_c_char_p, [_ErrP]),
    "hm_error_class": (_c_int, [_ErrP]),
    "hm_error_class_name": (_c_char_p, [_c_int]),
    "hm_error_detail": (_c_char_p, [_ErrP]),
    "hm_error_free": (None, [_ErrP]),
    "hm_free": (None, [ctypes.c_void_p]),
    "hm_instance_dir_resolve": (_c_int, [_P(_MallocStr), _c_char_p, _ErrPP]),
    "hm_client_new": (_c_int, [_P(_P(_Client)), _c_char_p, _ErrPP]),
    "hm_client_free": (None, [_P(_Client)]),
    "hm_client_set_timeout": (_c_int, [_P(_Client), _c_int, _ErrPP]),
    "hm_client_add": (_c_int, [_P(_Client), _P(_P(_Mount)), _P(_Spec), _ErrPP]),
    "hm_client_remove": (_c_int, [_P(_Client), _c_char_p, _c_uint, _ErrPP]),
    "hm_client_list": (_c_int, [_P(_Client), _P(_P(_MountList)), _ErrPP]),
    "hm_client_status": (_c_int, [_P(_Client), _P(_P(_Status)), _ErrPP]),
    "hm_client_connect_agent": (_c_int, [_P(_Client), _c_int, _ErrPP]),
    "hm_mount_type_name": (_c_char_p, [_c_int]),
    "hm_mount_type_parse": (_c_int, [_c_char_p, _ErrPP]),
    "hm_mount_state_name": (_c_char_p, [_c_int]),
    "hm_mount_spec_new": (_c_int, [_P(_P(_Spec)), _ErrPP]),
    "hm_mount_spec_free": (None, [_P(_Spec)]),
    "hm_mount_spec_set_host_path": (_c_int, [_P(_Spec), _c_char_p, _ErrPP]),
    "hm_mount_spec_set_guest_path": (_c_int, [_P(_Spec), _c_char_p, _ErrPP]),
    "hm_mount_spec_set_type": (_c_int, [_P(_Spec), _c_int, _ErrPP]),
    "hm_mount_spec_set_writable": (_c_int, [_P(_Spec), _c_int, _ErrPP]),
    "hm_mount_spec_set_persist": (_c_int, [_P(_Spec), _c_int, _ErrPP]),
    "hm_mount_spec_set_notify": (_c_int, [_P(_Spec), _c_int, _ErrPP]),
    "hm_mount_spec_set_option": (_c_int, [_P(_Spec), _c_char_p, _c_char_p, _ErrPP]),
    "hm_mount_free": (None, [_P(_Mount)]),
    "hm_mount_get_id": (_c_char_p, [_P(_Mount)]),
    "hm_mount_get_host_path": (_c_char_p, [_P(_Mount)]),
    "hm_mount_get_guest_path": (_c_char_p, [_P(_Mount)]),
    "hm_mount_get_type": (_c_int, [_P(_Mount)]),
    "hm_mount_get_writable": (_c_int, [_P(_Mount)]),
    "hm_mount_get_persist": (_c_int, [_P(_Mount)]),
    "hm_mount_get_notify": (_c_int, [_P(_Mount)]),
    "hm_mount_get_state": (_c_int, [_P(_Mount)]),
    "hm_mount_get_tag": (_c_char_p, [_P(_Mount)]),
    "hm_mount_get_via": (_c_char_p, [_P(_Mount)]),
    "hm_mount_get_reason": (_c_char_p, [_P(_Mount)]),
    "hm_mount_list_count": (_c_size, [_P(_MountList)]),
    "hm_mount_list_get": (_P(_Mount), [_P(_MountList), _c_size]),
    "hm_mount_list_free": (None, [_P(_MountList)]),
    "hm_status_count": (_c_size, [_P(_Status)]),
    "hm_status_key": (_c_char_p, [_P(_Status), _c_size]),
    "hm_status_value": (_c_char_p, [_P(_Status), _c_size]),
    "hm_status_get": (_c_char_p, [_P(_Status), _c_char_p]),
    "hm_status_to_json": (_c_int, [_P(_MallocStr), _P(_Status), _ErrPP]),
    "hm_status_free": (None, [_P(_Status)]),
}

_lock = threading.Lock()
_lib = None
_free = None


def load(path: Optional[str] = None) -> ctypes.CDLL:
    """Loads libhotmount (once per process) and sets every prototype. path,
    else $HOTMOUNT_LIB, else find_library("hotmount"), else
    libhotmount.so.0. Returns the CDLL. Calling it again returns the library
    already loaded."""
    global _lib, _free
    with _lock:
        if _lib is not None:
            return _lib
        name = (path or os.environ.get("HOTMOUNT_LIB") or ctypes.util.find_library("hotmount")
                or "libhotmount.so.0")
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise OSError("cannot load libhotmount (%s): %s; set HOTMOUNT_LIB to the path of "
                          "libhotmount.so.0" % (name, e)) from e
        for fn, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(lib, fn)
            f.restype = restype
            f.argtypes = argtypes
        # Strings the library malloc()s go back through hm_free: the C
        # library's free() reached through its own handle need not be the
        # allocator the library used (a sanitizer runtime, another malloc).
        _free = lib.hm_free
        major = lib.hm_version_number() // 10000
        if major != 0:
            raise OSError("%s is libhotmount %s; this binding knows the 0.x API"
                          % (name, lib.hm_version().decode()))
        _lib = lib
        return lib


def _L() -> ctypes.CDLL:
    return _lib if _lib is not None else load()


def _enc(p: PathArg) -> bytes:
    """A path or string argument as bytes for the C side (paths may be any
    bytes the file system allows; the library refuses what it cannot take)."""
    b = os.fsencode(p)
    if b"\0" in b:
        raise InvalidError("%r: embedded NUL character" % (p,), -22)
    return b


def _dec(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else os.fsdecode(b)


def _check(rc: int, err: "_ErrP") -> int:
    """rc >= 0: returns it. Otherwise raises the error err describes, and
    frees err (exactly once, also when reading it fails)."""
    if rc >= 0:
        if err:
            # Not expected: a call that succeeded leaves *err alone.
            _L().hm_error_free(err)
        return rc
    lib = _L()
    try:
        if err:
            code = lib.hm_error_code(err) or rc
            message = (lib.hm_error_message(err) or b"").decode("utf-8", "replace")
            klass = lib.hm_error_class_name(lib.hm_error_class(err)).decode()
            detail = lib.hm_error_detail(err)
            detail = detail.decode("utf-8", "replace") if detail is not None else None
        else:
            code = rc
            message = ""
            klass, detail = "none", None
    finally:
        lib.hm_error_free(err)
    if not message:
        message = lib.hm_strerror(code).decode("utf-8", "replace")
    raise _error_for(code, message, klass, detail)


def _take_string(p: "_MallocStr") -> str:
    """Copies a malloc'd C string and frees it."""
    if not p:
        return ""
    try:
        return os.fsdecode(ctypes.string_at(p))
    finally:
        _free(p)


def version() -> str:
    """The loaded library's version, "MAJOR.MINOR.PATCH"."""
    return _L().hm_version().decode()


def version_number() -> int:
    """The loaded library's version as MAJOR*10000+MINOR*100+PATCH."""
    return _L().hm_version_number()


def strerror(code: int) -> str:
    """A short description of an HM_E_* code."""
    return _L().hm_strerror(code).decode()


def instance_dir(name_or_path: PathArg) -> str:
    """The instance directory for a name ($HOTMOUNT_HOME/NAME, default
    ~/.hotmount/NAME) or a path (a value with a '/', used as given)."""
    lib = _L()
    out = _MallocStr()
    err = _ErrP()
    _check(lib.hm_instance_dir_resolve(ctypes.byref(out), _enc(name_or_path), ctypes.byref(err)),
           err)
    return _take_string(out)


# ---------------------------------------------------------------------------
# Mounts


@dataclasses.dataclass(frozen=True)
class Mount:
    """A snapshot of one registered mount (what list() and add() return)."""
    id: str
    host_path: str
    guest_path: str
    type: str          # "virtiofs", "9p", "reverse-sshfs", "bind"
    writable: bool
    persist: bool
    state: str         # "attaching", "mounted", "detaching", "broken"
    tag: Optional[str]     # virtiofs tag, 9p port, or bind's guest source dir, if any
    reason: Optional[str]  # why it is broken, if it is
    # 9p on QEMU: "pci" (reserved slot) or "serial"; virtiofs: "shared" (the
    # shared device, options={"device": "shared"})
    via: Optional[str] = None
    notify: bool = False  # host changes shown to guest file watchers (--notify)

    @classmethod
    def _from_c(cls, m: "_P(_Mount)") -> "Mount":
        if not m:
            raise ProtocolError("libhotmount returned no mount", ProtocolError.code)
        lib = _L()
        t = lib.hm_mount_get_type(m)
        s = lib.hm_mount_get_state(m)
        return cls(
            id=_dec(lib.hm_mount_get_id(m)),
            host_path=_dec(lib.hm_mount_get_host_path(m)),
            guest_path=_dec(lib.hm_mount_get_guest_path(m)),
            type=_dec(lib.hm_mount_type_name(t)) or str(t),
            writable=bool(lib.hm_mount_get_writable(m)),
            persist=bool(lib.hm_mount_get_persist(m)),
            state=_dec(lib.hm_mount_state_name(s)) or str(s),
            tag=_dec(lib.hm_mount_get_tag(m)),
            reason=_dec(lib.hm_mount_get_reason(m)),
            via=_dec(lib.hm_mount_get_via(m)),
            notify=bool(lib.hm_mount_get_notify(m)),
        )


class Client:
    """A connection to one instance's hotmountd. instance: a name or an
    instance directory (see instance_dir); socket: the daemon socket's path
    instead. timeout: seconds per request (the library's default is 120).

    Calls are serialized (the C client takes one thread at a time). Nothing
    is connected until the first call; with no daemon there, calls raise
    NotReadyError whose message names the hotmountd command to start it.
    close() (or leaving a with block) frees the client."""

    def __init__(self, instance: Optional[PathArg] = None, *, socket: Optional[PathArg] = None,
                 timeout: Optional[float] = None):
        if (instance is None) == (socket is None):
            raise TypeError("Client() takes an instance or socket=, not both or neither")
        lib = _L()
        self._c = None
        self._call_lock = threading.Lock()
        if socket is None:
            self.instance_dir = instance_dir(instance)
            socket = os.path.join(self.instance_dir, "hotmountd.sock")
        else:
            self.instance_dir = None
        self.socket_path = os.fsdecode(socket)
        c = _P(_Client)()
        err = _ErrP()
        _check(lib.hm_client_new(ctypes.byref(c), _enc(socket), ctypes.byref(err)), err)
        self._c = c
        if timeout is not None:
            try:
                ms = int(timeout * 1000)
                err = _ErrP()
                _check(lib.hm_client_set_timeout(c, ms, ctypes.byref(err)), err)
            except BaseException:
                self.close()
                raise

    # -- life cycle

    def close(self) -> None:
        """Frees the client; further calls raise ValueError. Idempotent."""
        with self._call_lock:
            c, self._c = self._c, None
            if c:
                _L().hm_client_free(c)

    @property
    def closed(self) -> bool:
        return self._c is None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # Not while the interpreter is tearing down (the library may be gone).
        if getattr(self, "_c", None) and _lib is not None:
            self.close()

    def __repr__(self) -> str:
        return "<hotmount.Client %s%s>" % (self.socket_path, " closed" if self.closed else "")

    def _handle(self):
        if self._c is None:
            raise ValueError("operation on a closed hotmount.Client")
        return self._c

    # -- calls

    def add(self, host: PathArg, guest: PathArg, type: str = "virtiofs", writable: bool = False,
            persist: bool = False, options: Optional[Dict[str, str]] = None,
            notify: bool = False) -> Mount:
        """Hot-mounts host directory `host` at `guest` in the VM; returns when
        the guest has mounted it (or everything was rolled back). options:
        transport options, e.g. {"cache": "never"}, or without root {"mapUid": "1000",
        "mapGid": "1000"} (guest user 1000 is the host user: docs/architecture.md
        "Ownership"). notify: show host changes to file watchers in the guest
        (see hm_mount_spec_set_notify)."""
        lib = _L()
        err = _ErrP()
        ty = _check(lib.hm_mount_type_parse(_enc(type), ctypes.byref(err)), err)
        spec = _P(_Spec)()
        err = _ErrP()
        _check(lib.hm_mount_spec_new(ctypes.byref(spec), ctypes.byref(err)), err)
        try:
            def call(fn, *args):
                e = _ErrP()
                _check(fn(spec, *args, ctypes.byref(e)), e)

            call(lib.hm_mount_spec_set_host_path, _enc(host))
            call(lib.hm_mount_spec_set_guest_path, _enc(guest))
            call(lib.hm_mount_spec_set_type, ty)
            call(lib.hm_mount_spec_set_writable, 1 if writable else 0)
            call(lib.hm_mount_spec_set_persist, 1 if persist else 0)
            call(lib.hm_mount_spec_set_notify, 1 if notify else 0)
            for k, v in (options or {}).items():
                call(lib.hm_mount_spec_set_option, _enc(k), _enc(str(v)))
            out = _P(_Mount)()
            err = _ErrP()
            try:
                with self._call_lock:
                    rc = lib.hm_client_add(self._handle(), ctypes.byref(out), spec,
                                           ctypes.byref(err))
                _check(rc, err)
                return Mount._from_c(out)
            finally:
                lib.hm_mount_free(out)  # NULL when the add failed
        finally:
            lib.hm_mount_spec_free(spec)

    def remove(self, guest: PathArg, lazy: bool = False, force: bool = False) -> None:
        """Unmounts `guest` in the VM and takes the host side down. lazy:
        umount -l in the guest; force: go on with the host side even if the
        guest unmount fails."""
        lib = _L()
        flags = (HM_REMOVE_LAZY if lazy else 0) | (HM_REMOVE_FORCE if force else 0)
        g = _enc(guest)
        err = _ErrP()
        with self._call_lock:
            rc = lib.hm_client_remove(self._handle(), g, flags, ctypes.byref(err))
        _check(rc, err)

    def list(self) -> List[Mount]:
        """The daemon's registry, a snapshot."""
        lib = _L()
        lst = _P(_MountList)()
        err = _ErrP()
        try:
            with self._call_lock:
                rc = lib.hm_client_list(self._handle(), ctypes.byref(lst), ctypes.byref(err))
            _check(rc, err)
            return [Mount._from_c(lib.hm_mount_list_get(lst, i))
                    for i in range(lib.hm_mount_list_count(lst))]
        finally:
            lib.hm_mount_list_free(lst)

    def status(self, raw: bool = False) -> Dict[str, Union[str, int, bool]]:
        """The daemon's facts (GET /v1/status; keys in docs/api.md), in the
        daemon's order. Integers and booleans are typed as in the HTTP API;
        raw=True gives every value as the library's string."""
        lib = _L()
        st = _P(_Status)()
        err = _ErrP()
        try:
            with self._call_lock:
                rc = lib.hm_client_status(self._handle(), ctypes.byref(st), ctypes.byref(err))
            _check(rc, err)
            if raw:
                return {_dec(lib.hm_status_key(st, i)): _dec(lib.hm_status_value(st, i))
                        for i in range(lib.hm_status_count(st))}
            out = _MallocStr()
            err = _ErrP()
            _check(lib.hm_status_to_json(ctypes.byref(out), st, ctypes.byref(err)), err)
            return json.loads(_take_string(out))
        finally:
            lib.hm_status_free(st)

    def connect_agent(self, timeout: float = 5.0) -> None:
        """Has the daemon reach the guest agent now, waiting up to `timeout`
        seconds (at most 60) for the guest; raises NotReadyError or
        TimedOutError when it does not answer."""
        lib = _L()
        err = _ErrP()
        with self._call_lock:
            rc = lib.hm_client_connect_agent(self._handle(), int(timeout * 1000),
                                             ctypes.byref(err))
        _check(rc, err)
