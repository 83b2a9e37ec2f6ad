"""The bf16 speed check: CPU flags decide, and training on a CPU without native bf16 warns."""

from __future__ import annotations

import warnings

import pytest

from vavam import hardware


def test_native_bf16_from_cpuinfo_flags():
    epyc_avx2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
    sapphire = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    zen4 = "flags\t\t: avx2 avx512f avx512_bf16\n"
    graviton3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
    assert hardware.native_bf16_from_cpuinfo(epyc_avx2) is False
    assert hardware.native_bf16_from_cpuinfo(sapphire) is True
    assert hardware.native_bf16_from_cpuinfo(zen4) is True
    assert hardware.native_bf16_from_cpuinfo(graviton3) is True
    assert hardware.native_bf16_from_cpuinfo("processor\t: 0\n") is None  # no flag line: cannot tell


def test_warns_only_for_bf16_on_a_slow_device(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="without native bf16.*precision '32'"):
        hardware.warn_if_slow_bf16("bf16-mixed", "cpu", "training")
    assert "--precision 32" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        hardware.warn_if_slow_bf16("32", "cpu")
        monkeypatch.setattr(hardware, "bf16_is_fast", lambda device="cpu": True)
        hardware.warn_if_slow_bf16("bf16-mixed", "cpu")
