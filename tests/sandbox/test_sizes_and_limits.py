import pytest

from sandbox import Limits, SandboxError, parse_size
from sandbox.sizes import format_size


@pytest.mark.parametrize(
    "text,expected",
    [("4096", 4096), ("64K", 64 << 10), ("512M", 512 << 20), ("2G", 2 << 30), ("1.5G", 3 << 29),
     ("512MiB", 512 << 20), ("2gb", 2 << 30), (" 1T ", 1 << 40), ("100B", 100)],
)
def test_sizes_accept_bytes_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12Q", "-5M", "M", "1,5G", "0", "0M", "ten"])
def test_bad_sizes_are_refused_with_the_input_named(text):
    with pytest.raises(ValueError) as err:
        parse_size(text)
    assert repr(text) in str(err.value)


def test_format_size_is_the_inverse_for_round_values():
    for value in (1 << 20, 3 << 30, 4096, 1234):
        assert parse_size(format_size(value)) == value


@pytest.mark.parametrize(
    "limits,words",
    [
        (Limits(memory_max_bytes=-1), "greater than zero"),
        (Limits(pids_max=0), "greater than zero"),
        (Limits(cpu_max=0.001), "0.01 CPUs"),
        (Limits(memory_max_bytes=1 << 20), "below"),
        (Limits(timeout_s=0), "timeout"),
        (Limits(memory_max_bytes=100 << 20, memory_high_bytes=200 << 20), "memory_high"),
    ],
)
def test_limits_no_kernel_accepts_are_refused(limits, words):
    with pytest.raises(SandboxError, match=words):
        limits.validate()


def test_memory_high_defaults_a_little_below_the_hard_limit():
    limits = Limits(memory_max_bytes=512 << 20)
    assert 480 << 20 <= limits.effective_memory_high() < 512 << 20
    assert Limits(memory_max_bytes=64 << 20).effective_memory_high() == 60 << 20
