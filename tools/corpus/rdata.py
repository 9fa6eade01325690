"""Reading R lazy-load databases (NAME.rdb + NAME.rdx) without R.

An R package built with LazyData keeps its data sets in data/Rdata.rdb: a
concatenation of blocks, each a 4-byte big-endian uncompressed length and a
compressed payload (zlib; or, for compression types 2/3, one type byte 'Z'
bzip2, 'X' xz, '0' stored, then the payload).  data/Rdata.rdx is one
serialized R list (gzip-compressed, as saveRDS writes it) with `variables`: a
named list of c(offset, length) into the .rdb, and `compressed`.

Each block is an R serialization stream, format 'X' (XDR, big-endian),
version 2 or 3.  This module decodes the subset of it that data sets use:
vectors (logical, integer, double, complex, character, list, raw), pairlists
with attributes and tags, symbols, references, ALTREP wrappers, and the
special singleton values.  Closures, environments and byte code are parsed
structurally where that is simple; anything else raises RDataError naming the
file and the unknown type code.

R values come back as plain Python: a character vector is a list of str (None
for NA), a generic vector a list, a pairlist an RPairList, and attributes are
kept on the RVector wrapper as `.attrs` (a dict)."""

import bz2
import gzip
import lzma
import struct
import zlib


class RDataError(Exception):
    pass


class RVector(list):
    """A list with R attributes (dict name -> value) and its SEXP type."""
    def __init__(self, items, sexptype, attrs=None):
        super().__init__(items)
        self.sexptype = sexptype
        self.attrs = attrs or {}


class RPairList(list):
    """A pairlist as a list of (tag or None, value)."""


class RSymbol(str):
    pass


class RNull:
    def __repr__(self):
        return "NULL"


NULL = RNull()

# SEXP type codes (src/include/Rinternals.h, serialize.c)
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP = 7, 8, 9, 10
INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 13, 14, 15, 16, 17
VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 19, 20, 21, 22, 23, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP = 247, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238

NA_INTEGER = -2147483648


class _Reader:
    def __init__(self, data, name):
        self.d = data
        self.p = 0
        self.name = name
        self.refs = []

    def fail(self, msg):
        raise RDataError("%s: at byte %d: %s" % (self.name, self.p, msg))

    def take(self, n):
        if self.p + n > len(self.d):
            self.fail("truncated: wanted %d bytes, %d left" % (n, len(self.d) - self.p))
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            self.fail("expected XDR serialization 'X\\n', found %r" % fmt)
        version = self.int()
        self.int()          # R version that wrote it
        self.int()          # minimal R version to read it
        if version == 3:
            n = self.int()
            self.take(n)    # native encoding name
        elif version != 2:
            self.fail("expected serialization version 2 or 3, found %d" % version)

    def charsxp_body(self, levels):
        n = self.int()
        if n == -1:
            return None
        raw = self.take(n)
        enc = "latin-1" if (levels & 4) and not (levels & 8) else "utf-8"
        return raw.decode(enc, errors="replace")

    def item(self):
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return NULL
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                 MISSINGARG_SXP, BASENAMESPACE_SXP):
            return RSymbol("<special %d>" % t)
        if t == REFSXP:
            i = flags >> 8
            if i == 0:
                i = self.int()
            if not 1 <= i <= len(self.refs):
                self.fail("reference %d out of range (%d known)" % (i, len(self.refs)))
            return self.refs[i - 1]
        if t == PERSISTSXP:
            v = self.strings_block()
            self.refs.append(v)
            return v
        if t == SYMSXP:
            v = RSymbol(self.item() or "")
            self.refs.append(v)
            return v
        if t in (PACKAGESXP, NAMESPACESXP):
            v = RSymbol("<namespace %s>" % ",".join(s or "" for s in self.strings_block()))
            self.refs.append(v)
            return v
        if t == ENVSXP:
            env = RVector([], ENVSXP)
            self.refs.append(env)
            self.int()                    # locked
            enclos = self.item()
            frame = self.item()
            hashtab = self.item()
            env.attrs = {"frame": frame, "hashtab": hashtab, "enclos": enclos}
            self.item()                   # attributes
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            out = RPairList()
            # iterate along the CDR chain rather than recursing on it
            while True:
                if has_attr:
                    self.item()           # attributes of the cell: not needed
                tag = self.item() if has_tag else None
                car = self.item()
                out.append((tag, car))
                nflags = self.int()
                nt = nflags & 0xFF
                if nt in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
                    has_attr = bool(nflags & (1 << 9))
                    has_tag = bool(nflags & (1 << 10))
                    continue
                # not a pairlist cell: un-read the flags and parse the tail
                self.p -= 4
                tail = self.item()
                if tail is not NULL:
                    out.append((None, tail))
                return out
        if t == CHARSXP:
            return self.charsxp_body(levels)
        if t in (SPECIALSXP, BUILTINSXP):
            n = self.int()
            return RSymbol("<builtin %s>" % self.take(n).decode("latin-1"))
        if t in (LGLSXP, INTSXP):
            n = self.length()
            vals = struct.unpack(">%di" % n, self.take(4 * n)) if n else ()
            vals = [None if v == NA_INTEGER else v for v in vals]
            return self.finish(RVector(vals, t), has_attr)
        if t == REALSXP:
            n = self.length()
            vals = struct.unpack(">%dd" % n, self.take(8 * n)) if n else ()
            return self.finish(RVector(vals, t), has_attr)
        if t == CPLXSXP:
            n = self.length()
            vals = struct.unpack(">%dd" % (2 * n), self.take(16 * n)) if n else ()
            vals = [complex(vals[2 * i], vals[2 * i + 1]) for i in range(n)]
            return self.finish(RVector(vals, t), has_attr)
        if t == STRSXP:
            n = self.length()
            vals = []
            for _ in range(n):
                f = self.int()
                if f & 0xFF != CHARSXP:
                    self.fail("expected CHARSXP (9) inside a character vector, found type %d"
                              % (f & 0xFF))
                vals.append(self.charsxp_body(f >> 12))
            return self.finish(RVector(vals, t), has_attr)
        if t in (VECSXP, EXPRSXP):
            n = self.length()
            vals = [self.item() for _ in range(n)]
            return self.finish(RVector(vals, t), has_attr)
        if t == RAWSXP:
            n = self.length()
            return self.finish(RVector(list(self.take(n)), t), has_attr)
        if t == S4SXP:
            return self.finish(RVector([], t), has_attr)
        if t == EXTPTRSXP:
            v = RVector([], t)
            self.refs.append(v)
            self.item()
            self.item()
            return self.finish(v, has_attr)
        if t == WEAKREFSXP:
            v = RVector([], t)
            self.refs.append(v)
            return self.finish(v, has_attr)
        if t == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            return self.altrep(info, state, attr)
        self.fail("unsupported R SEXP type code %d" % t)

    def strings_block(self):
        if self.int() != 0:
            self.fail("expected 0 before a persistent-name string block")
        n = self.int()
        out = []
        for _ in range(n):
            f = self.int()
            out.append(self.charsxp_body(f >> 12))
        return out

    def finish(self, vec, has_attr):
        if has_attr:
            vec.attrs = _pairlist_dict(self.item())
        return vec

    def altrep(self, info, state, attr):
        cls = info[0][1] if isinstance(info, RPairList) and info else ""
        attrs = _pairlist_dict(attr)
        if cls == "compact_intseq" and isinstance(state, RVector) and len(state) == 3:
            n, start, step = (int(x) for x in state)
            return RVector([start + i * step for i in range(n)], INTSXP, attrs)
        if cls == "compact_realseq" and isinstance(state, RVector) and len(state) == 3:
            n, start, step = state
            return RVector([start + i * step for i in range(int(n))], REALSXP, attrs)
        if cls in ("wrap_integer", "wrap_real", "wrap_string", "wrap_logical",
                   "wrap_list", "wrap_complex", "wrap_raw"):
            inner = state[0] if isinstance(state, RVector) and state else state
            if isinstance(inner, RVector):
                return RVector(list(inner), inner.sexptype, attrs or inner.attrs)
        if cls == "deferred_string" and isinstance(state, RPairList) and state:
            inner = state[0][1]
            if isinstance(inner, RVector):
                return RVector([None if v is None else _num_str(v) for v in inner],
                               STRSXP, attrs)
        self.fail("unsupported ALTREP class %r" % cls)


def _num_str(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _pairlist_dict(pl):
    if isinstance(pl, RPairList):
        return {str(tag): val for tag, val in pl if tag is not None}
    return {}


def unserialize(data, name="<R data>"):
    r = _Reader(data, name)
    r.header()
    return r.item()


def names_of(vec):
    n = vec.attrs.get("names") if isinstance(vec, RVector) else None
    return list(n) if n is not None else []


def _decompress_block(block, compressed, name):
    if len(block) < 4:
        raise RDataError("%s: block shorter than its 4-byte length header" % name)
    (ulen,) = struct.unpack(">I", block[:4])
    body = block[4:]
    if compressed in (2, 3):
        kind, body = body[:1], body[1:]
        if kind == b"Z":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body)
        elif kind == b"0":
            out = body
        elif kind == b"2":          # zlib with a type byte
            out = zlib.decompress(body)
        else:
            raise RDataError("%s: unknown block compression byte %r" % (name, kind))
    elif compressed:
        out = zlib.decompress(body)
    else:
        out = body
    if len(out) != ulen:
        raise RDataError("%s: block decompressed to %d bytes, header says %d"
                         % (name, len(out), ulen))
    return out


def read_lazyload(rdb_path, rdx_path):
    """Return {variable name: R value} for every variable of a lazy-load DB."""
    with open(rdx_path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:2] != b"X\n":
        raw = _decompress_block(raw, 1, rdx_path)
    index = unserialize(raw, rdx_path)
    parts = dict(zip(names_of(index), index))
    if "variables" not in parts:
        raise RDataError("%s: expected a list with `variables`, found names %s"
                         % (rdx_path, names_of(index)))
    comp = parts.get("compressed")
    comp = comp[0] if isinstance(comp, RVector) and comp else 1
    comp = 1 if comp is True else int(comp or 0)
    variables = parts["variables"]
    out = {}
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    for vname, pos in zip(names_of(variables), variables):
        off, length = int(pos[0]), int(pos[1])
        if off + length > len(rdb):
            raise RDataError("%s: variable %s at %d+%d runs past the end (%d bytes)"
                             % (rdb_path, vname, off, length, len(rdb)))
        data = _decompress_block(rdb[off:off + length], comp, rdb_path)
        out[vname] = unserialize(data, "%s[%s]" % (rdb_path, vname))
    return out
