"""moe_files.py — read moe's file formats from Python with only the standard
library and numpy: safetensors (model / optimizer / gradients), token files,
config.json. Used by the PyTorch reference, tests and benchmarks; also the
example code of docs/FORMAT.md."""
import json
import struct
import zlib

import numpy as np

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
          "U8": np.uint8, "F16": np.float16}


def read_safetensors(path):
    """Returns ({name: np.ndarray}, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
        out[name] = arr.copy()
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: np.ndarray} (F32/F64/I32/I64), written in the given order."""
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header, offset, chunks = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        raw = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def read_tokens(path):
    """Returns dict(ids=np.uint32 array, doc_start, doc_domain, domains, vocab_size,
    tokenizer: the recorded tokenizer file as bytes, or None)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"MOETOKS\0":
        raise ValueError(f"{path}: not a moe token file")
    version, width, n, n_docs, n_domains, vocab = struct.unpack("<IIQQII", blob[8:40])
    (flags,) = struct.unpack("<I", blob[44:48])
    pos = 64
    ids = np.frombuffer(blob, dtype="<u2" if width == 2 else "<u4", count=n, offset=pos)
    pos += n * width
    docs = np.frombuffer(blob, dtype=np.dtype([("start", "<u8"), ("domain", "<u4"), ("zero", "<u4")]),
                         count=n_docs, offset=pos)
    pos += 16 * n_docs
    domains = []
    for _ in range(n_domains):
        (ln,) = struct.unpack("<I", blob[pos:pos + 4])
        domains.append(blob[pos + 4:pos + 4 + ln].decode())
        pos += 4 + ln
    tokenizer = None
    if flags & 2:  # the tokenizer file text that moe prepare recorded
        (ln,) = struct.unpack("<Q", blob[pos:pos + 8])
        tokenizer = blob[pos + 8:pos + 8 + ln]
    return dict(ids=ids.astype(np.uint32), doc_start=docs["start"].copy(),
                doc_domain=docs["domain"].copy(), domains=domains, vocab_size=vocab,
                tokenizer=tokenizer)


def write_tokens(path, ids, vocab_size=0, doc_start=None, doc_domain=None, domains=None):
    """Writes a token file (format version 1) from a sequence of ids."""
    ids = np.asarray(ids, dtype=np.uint32)
    width = 2 if (len(ids) == 0 or ids.max() < 65536) else 4
    doc_start = [] if doc_start is None else list(doc_start)
    doc_domain = [0] * len(doc_start) if doc_domain is None else list(doc_domain)
    domains = domains or []
    body = bytearray(ids.astype("<u2" if width == 2 else "<u4").tobytes())
    for s, d in zip(doc_start, doc_domain):
        body += struct.pack("<QII", s, d, 0)
    for name in domains:
        raw = name.encode()
        body += struct.pack("<I", len(raw)) + raw
    head = b"MOETOKS\0" + struct.pack("<IIQQII", 1, width, len(ids), len(doc_start), len(domains), vocab_size)
    rest = struct.pack("<I", 1) + b"\0" * 16 + bytes(body)   # flags: CRC present
    crc = zlib.crc32(rest, zlib.crc32(head))                  # everything but the CRC field
    with open(path, "wb") as f:
        f.write(head + struct.pack("<I", crc) + rest)


def read_config(model_dir):
    with open(f"{model_dir}/config.json") as f:
        return json.load(f)


def resolve_checkpoint(d):
    """A model dir, or the newest checkpoints/step-* of a run dir."""
    import os
    if os.path.exists(f"{d}/model.safetensors"):
        return d
    steps = sorted(s for s in os.listdir(f"{d}/checkpoints") if s.startswith("step-"))
    return f"{d}/checkpoints/{steps[-1]}"
