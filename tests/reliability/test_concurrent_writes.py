"""Processes may write different files into one folder at once (a trainer's ranks each save their RNG state into the
checkpoint being written), and a reader may complete a journal while its writer does: neither breaks the other."""

from __future__ import annotations

import threading

from figures import record

from hyperpeft.checkpoint import recover_interrupted_write, write_files_atomically


def test_writers_of_different_files_and_a_reader_in_one_folder(tmp_path):
    errors, rounds = [], 150
    start = threading.Barrier(3)

    def write(name: str) -> None:
        start.wait()
        try:
            for i in range(rounds):
                write_files_atomically(tmp_path, {f"{name}.json": f"{name} {i}".encode(), f"{name}.bin": bytes([i])})
        except Exception as error:  # noqa: BLE001 - any failure is the finding
            errors.append(error)

    def read() -> None:
        start.wait()
        try:
            for _ in range(rounds):
                recover_interrupted_write(tmp_path)  # what every checkpoint read does first
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in ("rank0", "rank1")] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    last = rounds - 1
    assert (tmp_path / "rank0.json").read_text() == f"rank0 {last}" and (tmp_path / "rank1.bin").read_bytes() == bytes(
        [last]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.bin", "rank0.json", "rank1.bin", "rank1.json"]
    record("concurrent_writes", writers=2, readers=1, writes=2 * rounds, errors=0)
