#!/usr/bin/env python3
"""Independent safetensors validator (Python standard library only).

Checks a file the way the reference reader does, written separately from the TypeScript reader so
the two can catch each other's mistakes:

    python3 validate_safetensors.py FILE [--expect NAME=DTYPE:D0,D1,... ...]

An expectation with nothing after the colon (NAME=F32:) is a scalar, shape []. With expectations,
the file must hold exactly the expected tensors. Prints one summary line and exits 0 when the file
is valid; prints one line naming the problem and exits 1 otherwise (2 for bad arguments).
"""
import json
import struct
import sys

ITEM_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8,
}
MAX_HEADER = 100_000_000


class Invalid(Exception):
    pass


def is_count(value):
    # bool is an int subclass in Python: true is not a dimension.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validate(path):
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        if size < 8:
            raise Invalid(f"truncated file: {size} bytes")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER:
            raise Invalid(f"header length {n} over the limit")
        if 8 + n > size:
            raise Invalid(f"header length {n} runs past the end of the file ({size} bytes)")
        raw = f.read(n)
    if n % 8 != 0:
        # The reference writer pads to 8; readers accept any length, so this is only reported.
        pad_note = f" (header length {n} not a multiple of 8)"
    else:
        pad_note = ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Invalid(f"header is not UTF-8: {error}")
    if not text.startswith("{"):
        raise Invalid("header does not start with '{'")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise Invalid(f"duplicate key in header: {sorted(k for k in keys if keys.count(k) > 1)[0]!r}")
        return dict(pairs)

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise Invalid(f"header is not JSON: {error}")
    if not isinstance(header, dict):
        raise Invalid("header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise Invalid("__metadata__ is not an object of strings")

    buffer_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise Invalid(f"tensor {name!r} is not an object")
        dtype = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dtype not in ITEM_SIZES:
            raise Invalid(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(is_count(d) for d in shape):
            raise Invalid(f"tensor {name!r} shape {shape!r} is not a list of non-negative integers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets):
            raise Invalid(f"tensor {name!r} data_offsets {offsets!r} is not a pair of non-negative integers")
        begin, end = offsets
        if end < begin or end > buffer_len:
            raise Invalid(f"tensor {name!r} data_offsets {offsets} outside the {buffer_len}-byte buffer")
        elements = 1
        for d in shape:
            elements *= d
        if end - begin != elements * ITEM_SIZES[dtype]:
            raise Invalid(f"tensor {name!r} shape {shape} {dtype} needs {elements * ITEM_SIZES[dtype]} bytes, offsets give {end - begin}")
        spans.append((begin, end, name))

    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise Invalid(f"tensor {name!r} starts at {begin}, expected {covered} (gap or overlap)")
        covered = end
    if covered != buffer_len:
        raise Invalid(f"tensors cover {covered} bytes of a {buffer_len}-byte buffer")
    return header, metadata, buffer_len, pad_note


def parse_expect(spec):
    name, sep, rest = spec.rpartition("=")
    dtype, colon, dims = rest.partition(":")
    if not sep or not colon:
        raise ValueError(spec)
    shape = [int(d) for d in dims.split(",")] if dims else []
    return name, dtype, shape


def main(argv):
    args = argv[1:]
    if not args or args[0].startswith("-"):
        print("usage: validate_safetensors.py FILE [--expect NAME=DTYPE:D0,D1 ...]", file=sys.stderr)
        return 2
    path = args[0]
    expected = {}
    rest = args[1:]
    while rest:
        flag = rest.pop(0)
        if flag != "--expect" or not rest:
            print(f"bad argument {flag!r}", file=sys.stderr)
            return 2
        try:
            name, dtype, shape = parse_expect(rest.pop(0))
        except ValueError as error:
            print(f"bad --expect {error}", file=sys.stderr)
            return 2
        expected[name] = (dtype, shape)

    try:
        header, metadata, buffer_len, pad_note = validate(path)
        if expected:
            for name, (dtype, shape) in expected.items():
                info = header.get(name)
                if info is None:
                    raise Invalid(f"expected tensor {name!r} is missing")
                if info["dtype"] != dtype or info["shape"] != shape:
                    raise Invalid(f"tensor {name!r} is {info['dtype']} {info['shape']}, expected {dtype} {shape}")
            extra = sorted(set(header) - set(expected))
            if extra:
                raise Invalid(f"unexpected tensor {extra[0]!r}")
    except (Invalid, OSError) as error:
        print(f"INVALID {path}: {error}")
        return 1
    keys = 0 if metadata is None else len(metadata)
    print(f"OK {path}: {len(header)} tensors, {buffer_len} data bytes, {keys} metadata keys{pad_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
