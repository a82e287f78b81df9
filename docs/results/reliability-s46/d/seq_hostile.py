# ruff: noqa
# ruff: noqa
"""Item 3: proxy/sse_scan.py `sequence_number_after` on hostile chunks (compiled module from $SAGA_TREE):
the number after the last event's top-level `sequence_number`, and its CPU cost on a 256 KiB chunk."""

import json, os, sys, time

TREE = os.environ.get("SAGA_TREE", "/tmp/snap46e")
sys.path.insert(0, TREE)
os.chdir(TREE)
import proxy.sse_scan as S

print(f"(module: {S.__file__})")
f = S.sequence_number_after


def e(obj, sep=b"\n", space=b" "):
    return b"event: x" + sep + b"data:" + space + json.dumps(obj).encode() + sep + sep


def check(name, chunk, want):
    got = f(chunk)
    print(("OK" if got == want else "DEFECT") + f": {name}: got {got}, want {want}")


check("data: without a space", e({"sequence_number": 4}, space=b""), 5)
check("CRLF events", e({"sequence_number": 3}, b"\r\n") + e({"sequence_number": 4}, b"\r\n"), 5)
# CR-only line ends (SSE allows them): the last event's number is 4
check("CR-only line ends", e({"sequence_number": 3}, b"\r") + e({"sequence_number": 4}, b"\r"), 5)
# multi-line data (SSE joins the lines with LF): the last event's JSON is {"type":"x","sequence_number":5}
multi = e({"sequence_number": 4}) + b'event: x\ndata: {"type":"x",\ndata: "sequence_number":5}\n\n'
check("multi-line data event (number on its 2nd line)", multi, 6)
check("2^53-1", e({"sequence_number": 2**53 - 1}), 2**53)
check(
    "2^53 after 7 (no plausible number in the last)",
    e({"sequence_number": 7}) + e({"sequence_number": 2**53}),
    8,
)
check("boolean true after 7", e({"sequence_number": 7}) + e({"sequence_number": True}), 8)
check("float 9.0 after 7", e({"sequence_number": 7}) + e({"sequence_number": 9.0}), 8)
check("negative after 7", e({"sequence_number": 7}) + e({"sequence_number": -1}), 8)
check("string '9' after 7", e({"sequence_number": 7}) + e({"sequence_number": "9"}), 8)
check(
    "huge int 10^30 after 7",
    e({"sequence_number": 7}) + b'data: {"sequence_number":1000000000000000000000000000000}\n\n',
    8,
)
check(
    "key \\u-escaped (decodes to the key) after 7",
    e({"sequence_number": 7}) + b'data: {"sequence\\u005fnumber":9}\n\n',
    10,
)
check("duplicate key in last", b'data: {"sequence_number":1,"sequence_number":9}\n\n', 10)
check("nested only, after 7", e({"sequence_number": 7}) + e({"item": {"sequence_number": 99}}), 8)
check("number in an id: line", b"id: 3\n" + e({"sequence_number": 7}), 8)
check(
    "deep nesting line after 7",
    e({"sequence_number": 7}) + b'data: {"sequence_number":' + b"[" * 5000 + b"\n\n",
    8,
)

# CPU: a 256 KiB chunk of thousands of data lines naming the key nested, the last top-level one at its start
for label, line in (
    ("nested key per line", b'data: {"a":{"sequence_number":1}}\n\n'),
    ("nested key, no blank lines", b'data: {"a":{"sequence_number":1}}\n'),
    ("bare key per line (invalid JSON)", b'data: "sequence_number"\n'),
    ("non-data lines", b'x"sequence_number"\n'),
    ("many keys in one data line", None),
):
    if line is None:
        chunk = e({"sequence_number": 3}) + b"data: {" + b'"x":{"sequence_number":1},' * 10000 + b'"y":1}\n\n'
    else:
        chunk = e({"sequence_number": 3}) + line * ((256 * 1024) // len(line))
    n = 20
    t = time.perf_counter()
    for _ in range(n):
        got = f(chunk)
    ms = (time.perf_counter() - t) / n * 1000
    ok = got == 4 and ms < 50
    print(
        ("OK" if ok else "DEFECT")
        + f": CPU {label}: {len(chunk)} bytes, {chunk.count(S.SEQUENCE_NUMBER)} keys -> {got} in {ms:.1f} ms"
    )
