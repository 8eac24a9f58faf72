"""nerve log verify/dump on files made by PartitionLog (the Kafka comparison is in
tests/integration/test_corruption.py)."""

from __future__ import annotations

import struct
from pathlib import Path

from nerve.config import BrokerConfig, TopicConfig
from nerve.protocol.records import build_batch, iter_batches
from nerve.storage import PartitionLog
from nerve.tools.logtool import dump, verify

CFG = TopicConfig({"segment.bytes": "2000", "index.interval.bytes": "300"}, BrokerConfig())


def make(data_dir: Path) -> Path:
    part = data_dir / "t-0"
    log = PartitionLog(part, "t", 0, CFG)
    for i in range(40):
        buf = bytearray(build_batch([(b"k", f"v{i}".encode() * 9)] * 4, timestamp_ms=1_000 + i))
        log.append(buf, list(iter_batches(buf)), now_ms=1_000)
    log.close()
    return part


def run_verify(data_dir: Path) -> tuple[list[str], int]:
    lines: list[str] = []
    result = verify(data_dir, lines.append)
    return lines, result.problems


def test_clean_log_verifies(tmp_path: Path) -> None:
    make(tmp_path)
    lines, problems = run_verify(tmp_path)
    assert (lines, problems) == ([], 0)


def test_index_entries_checked_against_the_log(tmp_path: Path) -> None:
    part = make(tmp_path)
    index = part / "00000000000000000000.index"
    data = bytearray(index.read_bytes())
    rel, pos = struct.unpack_from(">ii", data, 8)
    struct.pack_into(">ii", data, 8, rel + 1, pos)  # second entry names the wrong offset
    index.write_bytes(bytes(data) + b"\x00\x00")  # and a torn entry at the end
    timeindex = part / "00000000000000000000.timeindex"
    tdata = bytearray(timeindex.read_bytes())
    ts, trel = struct.unpack_from(">qi", tdata, 0)
    struct.pack_into(">qi", tdata, 0, ts - 1, trel)  # a timestamp no batch has
    timeindex.write_bytes(bytes(tdata))
    lines, problems = run_verify(tmp_path)
    assert problems == 3, lines
    assert any(ln.startswith("t-0 00000000000000000000.index entry 1: offset") for ln in lines)
    assert any("not a whole number of 8-byte entries" in ln for ln in lines)
    assert any(ln.startswith("t-0 00000000000000000000.timeindex entry 0: timestamp")
               for ln in lines)


def test_gap_between_segments_and_damage_reported(tmp_path: Path) -> None:
    part = make(tmp_path)
    segs = sorted(part.glob("*.log"))
    assert len(segs) >= 3
    segs[1].unlink()  # a whole segment missing
    first = list(iter_batches(segs[0].read_bytes()))
    pos = first[2][0]
    with open(segs[0], "r+b") as f:
        f.seek(pos + 16)
        f.write(b"\x07")  # magic
    lines, problems = run_verify(tmp_path)
    assert problems == 2, lines
    assert any(f"{segs[0].name} position {pos}: magic 7 is not 2" in ln for ln in lines)
    assert any(f"{segs[2].name} position 0: segment starts at offset" in ln for ln in lines)
    out: list[str] = []
    dump(segs[0], False, out.append)
    assert any(ln.startswith(f"Damaged: position {pos}: magic 7") for ln in out)
    assert out[-1].startswith("baseOffset: ")  # the dump goes on after the damage
