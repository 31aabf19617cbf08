#!/usr/bin/env python3
"""python-binding: the parts of examples/python/hotmount.py that need no VM.

- every prototype the binding sets agrees with the C declaration in
  include/hotmount/*.h (argument count, int / unsigned / size_t / pointer for
  each argument and the result), so no call passes a pointer as an int;
- every HM_E_* code in error.h maps to its own exception class;
- the library loads from $HOTMOUNT_LIB; version, instance_dir, strerror;
- a client with no daemon: NotReadyError saying how to start it; local
  refusals (unknown type, NUL in a path) before any request; a closed client.

The real daemon and guest are tests/e2e/test_python.py (e2e-python).
Environment: HOTMOUNT_LIB, HM_INCLUDE_DIR (default: ../../include). unittest;
exit status 0 when everything passed.
"""

import ctypes
import os
import re
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import hotmount  # noqa: E402

INCLUDE = os.environ.get("HM_INCLUDE_DIR") or os.path.join(HERE, "..", "..", "include")


def strip_name(param):
    """"const char *path" -> "const char *"; "int" stays "int"."""
    p = " ".join(param.split())
    m = re.match(r"^(.*?[\s*])(\w+)$", p)
    return m.group(1).strip() if m and m.group(1).strip() else p


def declarations():
    """{name: (return type, [parameter types])} of the HM_API functions."""
    text = ""
    for f in sorted(os.listdir(os.path.join(INCLUDE, "hotmount"))):
        if f.endswith((".h", ".h.in")):  # version.h is made from version.h.in
            with open(os.path.join(INCLUDE, "hotmount", f)) as fh:
                text += fh.read() + "\n"
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    out = {}
    for m in re.finditer(r"HM_API\s+([^;(]*?)\b(hm_\w+)\s*\(([^)]*)\)\s*;", text, re.S):
        ret, name, params = m.group(1), m.group(2), m.group(3)
        params = [p.strip() for p in params.split(",")]
        if params == ["void"]:
            params = []
        out[name] = (" ".join(ret.split()), [strip_name(p) for p in params])
    return out


def kind_of_c(t):
    t = t.replace("const ", "").strip()
    if "*" in t:
        return "pointer"
    return {"int": "int", "unsigned": "uint", "unsigned int": "uint", "size_t": "size",
            "void": "void"}.get(t, "unknown " + t)


def kind_of_ctypes(t):
    if t is None:
        return "void"
    if t in (ctypes.c_char_p, ctypes.c_void_p) or issubclass(t, ctypes._Pointer):
        return "pointer"
    if t is ctypes.c_int:
        return "int"
    if t is ctypes.c_uint:
        return "uint"
    if t is ctypes.c_size_t:
        return "size"
    return "unknown %r" % t


class Prototypes(unittest.TestCase):
    def test_every_prototype_matches_the_header(self):
        decl = declarations()
        self.assertGreater(len(decl), 50, "header parse found too little")
        for name, (restype, argtypes) in hotmount._PROTOTYPES.items():
            with self.subTest(name):
                self.assertTrue(name in decl, "not an HM_API function")
                cret, cargs = decl[name]
                self.assertEqual(kind_of_ctypes(restype), kind_of_c(cret), "return type")
                self.assertEqual([kind_of_ctypes(a) for a in argtypes],
                                 [kind_of_c(a) for a in cargs], "arguments %s" % cargs)

    def test_the_client_side_is_covered(self):
        decl = declarations()
        # hm_status_set and hm_error_set* are for backends (driver.h), not clients.
        want = [n for n in decl if n.startswith(("hm_client_", "hm_status_", "hm_error_"))
                and n not in ("hm_status_set", "hm_error_set", "hm_error_set_class")]
        want += ["hm_version", "hm_version_number", "hm_instance_dir_resolve", "hm_strerror",
                 "hm_mount_list_count", "hm_mount_list_get", "hm_mount_list_free",
                 "hm_mount_free", "hm_mount_spec_new", "hm_mount_spec_free"]
        want += [n for n in decl if n.startswith(("hm_mount_get_", "hm_mount_spec_set_"))]
        self.assertEqual(sorted(set(want) - set(hotmount._PROTOTYPES)), [])

    def test_loaded_functions_have_their_prototypes(self):
        lib = hotmount.load()
        for name, (restype, argtypes) in hotmount._PROTOTYPES.items():
            f = getattr(lib, name)
            self.assertIs(f.restype, restype, name)
            self.assertEqual(list(f.argtypes), list(argtypes), name)


class Errors(unittest.TestCase):
    def test_every_code_has_its_class(self):
        with open(os.path.join(INCLUDE, "hotmount", "error.h")) as f:
            codes = dict((n, int(v)) for n, v in
                         re.findall(r"#define (HM_E_\w+) \((-\d+)\)", f.read()))
        self.assertGreaterEqual(len(codes), 16, "error.h parse found too little")
        classes = set()
        for name, code in codes.items():
            e = hotmount._error_for(code, "msg for %s" % name)
            self.assertIsInstance(e, hotmount.HotmountError, name)
            self.assertEqual((e.code, str(e)), (code, "msg for %s" % name))
            self.assertEqual(e.errno, -code if code > -4000 else None, name)
            self.assertEqual(type(e).__doc__.split(":")[0].rstrip("."), name, name)
            classes.add(type(e))
        self.assertEqual(len(classes), len(codes), "two codes share a class")

    def test_python_hierarchy(self):
        self.assertIsInstance(hotmount._error_for(-22, "x"), ValueError)
        self.assertIsInstance(hotmount._error_for(-17, "x"), FileExistsError)
        self.assertIsInstance(hotmount._error_for(-2, "x"), FileNotFoundError)
        self.assertIsInstance(hotmount._error_for(-107, "x"), ConnectionError)
        self.assertIsInstance(hotmount._error_for(-110, "x"), TimeoutError)
        self.assertIsInstance(hotmount._error_for(-1, "x"), PermissionError)
        other = hotmount._error_for(-13, "x")  # EACCES: no class of its own
        self.assertIs(type(other), hotmount.HotmountOSError)
        self.assertEqual((other.errno, other.strerror), (13, "x"))
        self.assertIs(type(hotmount._error_for(-4999, "x")), hotmount.HotmountError)


class NoDaemon(unittest.TestCase):
    def setUp(self):
        self.home = tempfile.mkdtemp(prefix="hm-py-unit-")
        os.environ["HOTMOUNT_HOME"] = self.home

    def tearDown(self):
        shutil.rmtree(self.home)

    def test_library(self):
        lib = hotmount.load()
        if os.environ.get("HOTMOUNT_LIB"):
            self.assertEqual(lib._name, os.environ["HOTMOUNT_LIB"])
        self.assertIs(hotmount.load(), lib)
        major, minor, patch = (int(x) for x in hotmount.version().split("."))
        self.assertEqual(hotmount.version_number(), major * 10000 + minor * 100 + patch)
        self.assertEqual(hotmount.strerror(-17), "mount point already in use")

    def test_instance_dir(self):
        self.assertEqual(hotmount.instance_dir("vm1"), os.path.join(self.home, "vm1"))
        self.assertEqual(hotmount.instance_dir(b"./x/y"), "./x/y")
        for bad in ("", "a b", "..", "x" * 65):
            with self.subTest(bad), self.assertRaises(hotmount.InvalidError) as cm:
                hotmount.instance_dir(bad)
            self.assertIn("hm_instance_dir_resolve", str(cm.exception))
        self.assertFalse(os.listdir(self.home), "resolving created something")

    def test_not_running(self):
        with hotmount.Client("vm1") as c:
            self.assertEqual(c.socket_path, os.path.join(self.home, "vm1", "hotmountd.sock"))
            for call in (c.list, c.status, lambda: c.remove("/mnt/x"),
                         lambda: c.add(self.home, "/mnt/x"), c.connect_agent):
                with self.assertRaises(hotmount.NotReadyError) as cm:
                    call()
                msg = str(cm.exception)
                # Typed: a caller tells "no daemon" from "no VM" without the text.
                self.assertEqual((cm.exception.error_class, cm.exception.detail), ("http", None))
                self.assertIn("hotmountd is not running", msg)
                self.assertIn("start it with: hotmountd %s/vm1" % self.home, msg)

    def test_local_refusals(self):
        with hotmount.Client(socket=os.path.join(self.home, "s.sock"), timeout=5) as c:
            with self.assertRaisesRegex(hotmount.InvalidError, "unknown mount type \"nfs\""):
                c.add(self.home, "/mnt/x", type="nfs")
            with self.assertRaisesRegex(hotmount.InvalidError, "NUL"):
                c.add(self.home + "\0", "/mnt/x")
            with self.assertRaisesRegex(hotmount.InvalidError, "timeout"):
                c.connect_agent(timeout=61)
        with self.assertRaises(TypeError):
            hotmount.Client()
        with self.assertRaisesRegex(hotmount.InvalidError, "timeout"):
            hotmount.Client("vm1", timeout=0)

    def test_closed(self):
        c = hotmount.Client("vm1")
        c.close()
        c.close()
        self.assertTrue(c.closed)
        with self.assertRaisesRegex(ValueError, "closed"):
            c.list()

    def test_mount_is_a_frozen_snapshot(self):
        m = hotmount.Mount("hm-1", "/h", "/g", "virtiofs", False, False, "mounted", "t", None)
        with self.assertRaises(Exception):
            m.state = "broken"
        self.assertEqual(m, hotmount.Mount("hm-1", "/h", "/g", "virtiofs", False, False,
                                           "mounted", "t", None))


if __name__ == "__main__":
    unittest.main(verbosity=2)
