"""Timing figures that explain themselves: int8 instructions, noisy spread, the protocol."""

from __future__ import annotations

from henet_edge.deploy.demo import format_summary, protocol_line
from henet_edge.device.bench import noise_reasons
from henet_edge.device.environment import Probe


def _cpuinfo(tmp_path, text):
    (tmp_path / "proc").mkdir(parents=True, exist_ok=True)
    (tmp_path / "proc" / "cpuinfo").write_text(text)
    return Probe(tmp_path, vcgencmd=None)


def test_int8_instructions_are_read_from_cpuinfo(tmp_path):
    epyc = _cpuinfo(tmp_path / "x86", "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f "
                                      "avx512_vnni avx512_bf16\n")
    assert epyc.int8_features() == ["AVX-512 VNNI"]
    xeon = _cpuinfo(tmp_path / "xeon", "processor\t: 0\nflags\t\t: avx512f avx512_vnni "
                                       "amx_bf16 avx_vnni amx_tile amx_int8\n")
    assert xeon.int8_features() == ["AVX-512 VNNI", "AVX-VNNI", "AMX-INT8"]
    a76 = _cpuinfo(tmp_path / "a76", "processor\t: 0\nFeatures\t: fp asimd aes crc32 "
                                     "atomics asimdrdm lrcpc dcpop asimddp\n")
    assert a76.int8_features() == ["Arm dot-product"]
    a72 = _cpuinfo(tmp_path / "a72", "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 "
                                     "cpuid\n")
    assert a72.int8_features() == []
    assert a72.record(0)["int8_features"] == []


def _row(name, median, p90, mean=None, std=0.01):
    mean = median if mean is None else mean
    return {"name": name, "per_inference_ms": {"median": median, "p90": p90, "mean": mean,
                                               "std": std}}


def test_a_spread_that_says_the_core_was_shared_is_flagged():
    reasons = noise_reasons([_row("float32", 0.45, 4.49), _row("int8", 0.30, 0.33),
                             _row("jittery", 1.0, 1.5, mean=1.0, std=0.8)])
    assert len(reasons) == 2
    assert reasons[0].startswith("noisy timing of float32: p90 4.490 ms is 10.0x the median "
                                 "0.450 ms")
    assert reasons[1].startswith("noisy timing of jittery: standard deviation 0.800 ms is "
                                 "80% of the mean")
    assert noise_reasons([_row("quiet", 1.0, 1.9)]) == []  # under twice the median


def _summary(**changes):
    s = {"report": {"float32_top1": 0.9, "int8_top1": 0.89, "int8_agreement": 0.99,
                    "data": "held-out", "images": 10},
         "latency": {p: {"time_s": 0.1, "median": 0.3, "p90": 0.4} for p in ("float32", "int8")},
         "sizes": {"float32": 4096, "int8": 2048}, "speedup_int8": 1.0, "runs": 300,
         "repeats": 3, "protocol": "paper (changed: runs 300, repeats 3)",
         "paper_protocol": False, "environment": {"cpu": "AMD EPYC",
                                                  "int8_features": ["AVX-512 VNNI"]},
         "target": "local:/tmp/x/device", "selftest": {"text": "int8 8/8, float32 8/8"},
         "classified": [], "seconds": 3.0,
         "target_note": "a temporary folder, deleted when the demo ended; --keep or "
                        "--target DIR keeps it"}
    return {**s, **changes}


def test_the_demo_says_plainly_which_protocol_ran_and_on_what():
    line = protocol_line(_summary())
    assert line == ("Time (s): the total time of 300 passes of one image, averaged over 3 "
                    "repeats, one thread on one core of AMD EPYC (int8 instructions: AVX-512 "
                    "VNNI); the paper's protocol is 1000 passes x 5 repeats (`demo --full` "
                    "runs it)")
    assert "(changed:" not in format_summary(_summary())
    full = protocol_line(_summary(runs=1000, repeats=5, paper_protocol=True,
                                  environment={"cpu": "Cortex-A72", "int8_features": []}))
    assert full.endswith("Cortex-A72 (no int8 dot-product instructions: no VNNI, no Arm "
                         "dot-product); the paper's protocol")


def test_the_demo_says_its_temporary_target_is_gone():
    text = format_summary(_summary())
    assert "self-test on local:/tmp/x/device (a temporary folder, deleted when the demo " \
           "ended; --keep or --target DIR keeps it)" in text
    kept = format_summary({k: v for k, v in _summary().items() if k != "target_note"})
    assert "temporary" not in kept


def test_the_device_runtimes_info_lines_are_hidden_unless_verbose():
    from henet_edge.deploy.demo import device_errors

    said: list[str] = []
    for verbose in (False, True):
        relay = device_errors(said.append, verbose)
        relay("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
        relay("nope.jpg: no such file")
    assert said == ["nope.jpg: no such file",
                    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                    "nope.jpg: no such file"]


def test_demo_keep_keeps_the_temporary_device_folder(monkeypatch):
    import contextlib
    import shutil
    from pathlib import Path

    import henet_edge.deploy.demo as demo

    @contextlib.contextmanager
    def installer(target, log):
        target.mkdir(parents=True, exist_ok=True)
        yield type("I", (), {"name": f"local:{target}", "target": target})()

    monkeypatch.setattr(demo, "preflight_local", lambda target, core: 0)
    monkeypatch.setattr(demo, "convert_default", lambda options, out, log: {})
    monkeypatch.setattr(demo, "local_installer", installer)
    monkeypatch.setattr(demo, "demo_on", lambda inst, *a: {"target": inst.name,
                                                           "folder": inst.target})
    gone = demo.run_demo(demo.DemoOptions(), print)
    assert not gone["target_kept"] and "temporary" in gone["target_note"]
    assert not Path(gone["folder"]).exists()
    kept = demo.run_demo(demo.DemoOptions(), print, keep=True)
    assert kept["target_kept"] and "target_note" not in kept
    assert Path(kept["folder"]).is_dir()
    shutil.rmtree(kept["folder"])


def test_the_demo_says_what_to_try_when_int8_is_slower():
    slower = format_summary(_summary(speedup_int8=0.6))
    assert "int8 is slower than float32 here" in slower and "--lowering" in slower
    assert "int8 is slower" not in format_summary(_summary(speedup_int8=1.8))
