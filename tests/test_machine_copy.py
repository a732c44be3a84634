"""One shared copy per machine: written once, mapped read-only by other processes, sealed, checked."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from hpcbridge.cluster import machine_copy


def sample() -> dict:
    return {"matrix": np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000),
            "fortran": np.asfortranarray(np.ones((300, 200), dtype=np.int32)),
            "blob": b"x" * 100_000, "text": "hello", "numbers": [1, 2.5, None]}


def test_an_object_comes_back_equal_with_its_arrays_mapped_read_only() -> None:
    original = sample()
    copy = machine_copy.publish(original)
    assert copy is not None
    loaded = copy.load()
    assert loaded.keys() == original.keys()
    np.testing.assert_array_equal(loaded["matrix"], original["matrix"])
    np.testing.assert_array_equal(loaded["fortran"], original["fortran"])
    assert loaded["fortran"].flags.f_contiguous
    assert loaded["blob"] == original["blob"] and loaded["text"] == "hello" and loaded["numbers"] == [1, 2.5, None]
    assert not loaded["matrix"].flags.writeable and not loaded["matrix"].flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        loaded["matrix"][0, 0] = 1.0
    assert copy.nbytes >= original["matrix"].nbytes + original["fortran"].nbytes
    copy.close()
    assert float(loaded["matrix"][-1, -1]) == 2_999_999.0  # still mapped after the descriptor closed


def test_the_file_is_sealed_against_any_change() -> None:
    copy = machine_copy.publish(np.zeros(1000))
    assert copy is not None
    with pytest.raises(PermissionError):
        os.pwrite(copy.fd, b"changed", 100)
    with pytest.raises(PermissionError):
        os.ftruncate(copy.fd, 10)
    assert fcntl.fcntl(copy.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    copy.close()


def test_another_process_of_the_owner_maps_the_same_pages() -> None:
    data = np.random.default_rng(3).random(2_000_000)
    copy = machine_copy.publish(data)
    assert copy is not None
    where = asdict(copy.where())
    script = ("import sys, numpy as np\n"
              "from hpcbridge.cluster import machine_copy\n"
              f"copy = machine_copy.attach(machine_copy.Where(**{where!r}))\n"
              "array = copy.load()\n"
              "print(array.flags.writeable, array.size, repr(float(array.sum())))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(data.size), repr(float(data.sum()))]
    copy.close()


def test_a_wrong_token_another_machine_or_a_gone_holder_is_refused() -> None:
    copy = machine_copy.publish(np.ones(10))
    assert copy is not None
    where = copy.where()
    assert machine_copy.attach(where) is not None
    assert machine_copy.attach(machine_copy.Where(where.machine, where.pid, where.fd, b"\0" * 16)) is None
    assert machine_copy.attach(machine_copy.Where("another-boot/1", where.pid, where.fd, where.token)) is None
    plain = os.open("/dev/null", os.O_RDONLY)  # a descriptor that is not a sealed copy
    assert machine_copy.attach(machine_copy.Where(where.machine, where.pid, plain, where.token)) is None
    os.close(plain)
    copy.close()
    assert machine_copy.attach(where) is None


def test_hundreds_of_buffers_fit_the_table_and_come_back_in_order() -> None:
    arrays = [np.full(1000 + index, index, dtype=np.int32) for index in range(300)]
    copy = machine_copy.publish(arrays)
    assert copy is not None
    loaded = copy.load()
    assert len(loaded) == 300 and all(np.array_equal(a, b) for a, b in zip(loaded, arrays))
    assert copy.payload_bytes >= sum(array.nbytes for array in arrays)
    copy.close()
