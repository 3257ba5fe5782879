"""The environment record: fake /proc, /sys and vcgencmd laid out in a temp folder."""

from __future__ import annotations

import pytest

from henet_edge.device.environment import UNKNOWN, Probe, assess, decode_throttled

from .device_helpers import fake_pi


def test_a_raspberry_pi_is_read_field_by_field(tmp_path):
    root, vcgencmd = fake_pi(tmp_path, governor="ondemand", throttled=("0x50005",))
    probe = Probe(root, vcgencmd)
    record = probe.record(2, {"name": "ai_edge_litert", "version": "2.3.0"})
    assert record["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert record["cpu"] == "Cortex-A72"
    assert record["core"] == 2
    assert record["max_frequency_mhz"] == 1800.0
    assert record["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert record["kernel"] == "6.6.51+rpt-rpi-v8"
    assert record["runtime"]["name"] == "ai_edge_litert"
    assert record["python"].split()[1].count(".") == 2

    snap = probe.snapshot(2)
    assert snap["governor"] == "ondemand"
    assert snap["frequency_mhz"] == 1500.0
    assert snap["temperature_c"] == pytest.approx(48.312)
    assert snap["vcgencmd_temperature_c"] == pytest.approx(48.3)
    assert snap["throttled"]["raw"] == "0x50005"
    assert snap["throttled"]["now"] == ["under-voltage detected", "currently throttled"]
    assert snap["throttled"]["since_boot"] == ["under-voltage has occurred",
                                               "throttling has occurred"]


def test_every_unreadable_field_is_unknown(tmp_path):
    probe = Probe(tmp_path, vcgencmd=None)
    record, snap = probe.record(0), probe.snapshot(0)
    for key in ("board", "cpu", "max_frequency_mhz", "os", "kernel", "runtime"):
        assert record[key] == UNKNOWN, key
    assert set(snap.values()) == {UNKNOWN}
    assert Probe(tmp_path, vcgencmd=str(tmp_path / "no-such-tool")).throttled() == UNKNOWN
    assert probe.snapshot(None)["governor"] == UNKNOWN


def test_a_failing_or_odd_vcgencmd_is_unknown(tmp_path):
    root, vcgencmd = fake_pi(tmp_path, temp="VCHI initialization failed")
    probe = Probe(root, vcgencmd)
    assert probe.vcgencmd_temperature() == UNKNOWN
    assert probe.run_vcgencmd("no_such_command") is None
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("garbage")
    assert probe.cpu_temperature() == UNKNOWN


def test_x86_cpu_name_and_other_thermal_zones(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU 3000\n")
    zone = tmp_path / "sys/class/thermal/thermal_zone3"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61000")
    (zone / "type").write_text("acpitz")
    probe = Probe(tmp_path, vcgencmd=None)
    assert probe.cpu() == "Some CPU 3000"
    assert probe.thermal_zones() == {"acpitz": 61.0}
    assert probe.cpu_temperature() == 61.0


def test_decode_throttled_bits():
    assert decode_throttled(0) == {"raw": "0x0", "now": [], "since_boot": [],
                                   "other_bits": "0x0"}
    decoded = decode_throttled(0x80008 | 0x100)
    assert decoded["now"] == ["soft temperature limit active"]
    assert decoded["since_boot"] == ["soft temperature limit has occurred"]
    assert decoded["other_bits"] == "0x100"


def _snap(governor="performance", throttled=0x0):
    return {"governor": governor,
            "throttled": decode_throttled(throttled) if throttled is not None else UNKNOWN}


def test_assess_clean_run():
    assert assess(_snap(), _snap()) == {"suspect": False, "reasons": [], "unverified": []}


def test_assess_governor_not_performance():
    status = assess(_snap("ondemand"), _snap("ondemand"))
    assert status["suspect"]
    assert "'ondemand', not 'performance'" in status["reasons"][0]
    assert "scaling_governor" in status["reasons"][0]  # the fix


def test_assess_throttling_now_during_and_before():
    now = assess(_snap(throttled=0x4), _snap(throttled=0x4))
    assert now["suspect"] and any("currently throttled before" in r for r in now["reasons"])
    during = assess(_snap(), _snap(throttled=0x40000))
    assert during["suspect"]
    assert during["reasons"] == ["during the run: throttling has occurred "
                                 "(get_throttled=0x40000)"]
    earlier = assess(_snap(throttled=0x10000), _snap(throttled=0x10000))
    assert earlier["suspect"]
    assert "before the run" in earlier["reasons"][0]


def test_assess_unknowns_are_noted_not_invented():
    status = assess({"governor": UNKNOWN, "throttled": UNKNOWN},
                    {"governor": UNKNOWN, "throttled": UNKNOWN})
    assert not status["suspect"]
    assert len(status["unverified"]) == 2
