"""One place decides the device and bf16 (core/modeling/device.py): the decision table, the CPU-flags probe, and
the callers that follow a simulated machine. No model is loaded here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ftlab_pipelines.core.artifacts import write_json
from ftlab_pipelines.core.config.labs import ModelConfig, TrainConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.modeling import device, models
from ftlab_pipelines.core.training import train

PACKAGE = Path(__file__).resolve().parents[1] / "ftlab_pipelines"

CPU_PLAIN = device.Hardware(cuda=False, cpu_flags=frozenset({"fpu", "sse2", "avx2", "avx512f"}))
CPU_AMX = device.Hardware(cuda=False, cpu_flags=frozenset({"avx512f", "amx_bf16", "amx_tile"}))
CPU_AVX512_BF16 = device.Hardware(cuda=False, cpu_flags=frozenset({"avx512f", "avx512_bf16"}))
GPU_BF16 = device.Hardware(cuda=True, cuda_bf16=True)
GPU_OLD = device.Hardware(cuda=True, cuda_bf16=False)


@pytest.mark.parametrize(("hw", "setting", "bf16"), [
    (CPU_PLAIN, "auto", False), (CPU_PLAIN, "on", False), (CPU_PLAIN, "off", False),  # emulated bf16: never
    (CPU_AMX, "auto", True), (CPU_AMX, "on", True), (CPU_AMX, "off", False),
    (CPU_AVX512_BF16, "auto", True),
    (GPU_BF16, "auto", True), (GPU_BF16, "off", False),
    (GPU_OLD, "auto", False), (GPU_OLD, "on", False),
])
def test_bf16_only_where_the_hardware_computes_it(hw, setting, bf16):
    placed = device.resolve(setting, hw)
    assert placed.bf16 is bf16
    assert placed.on_gpu is hw.cuda and placed.device.type == ("cuda" if hw.cuda else "cpu")
    assert placed.compute_dtype == (torch.bfloat16 if hw.native_bf16 else torch.float32)


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="train.bf16"):
        device.resolve("yes", CPU_AMX)


def test_cpu_flags_are_read_from_the_flags_line_not_anywhere_in_cpuinfo():
    cpuinfo = ("processor\t: 0\nmodel name\t: Some amx_bf16-free CPU\n"
               "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\n")
    assert device.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert device.cpu_flags("model name: amx_bf16 in a name only\n") == frozenset()
    assert device.Hardware(cuda=False, cpu_flags=device.cpu_flags(cpuinfo)).native_bf16
    # the flag alone is not enough: where the probe measured bf16 slower than fp32, nothing is cast to bf16
    slow = device.Hardware(cuda=False, cpu_flags=device.cpu_flags(cpuinfo), cpu_bf16_faster=False)
    assert not slow.native_bf16 and not device.resolve("auto", slow).bf16 and not device.resolve("on", slow).bf16


def test_the_probe_leaves_the_process_rng_alone():
    state = torch.random.get_rng_state()
    device.probe()
    assert torch.equal(state, torch.random.get_rng_state())


def this_cpu() -> tuple[str, frozenset[str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return cpuinfo, device.cpu_flags(cpuinfo)


def test_the_bf16_timing_is_taken_once_per_cpu_model_and_every_later_process_reads_it():
    """The ranks of a distributed run, a resumed run and every later stage must agree on the precision: a timing
    taken in each process flipped under load (one DDP rank autocast to bf16, the other not)."""
    cpuinfo = "model name\t: Test CPU 9000\nflags\t\t: avx2 avx512_bf16\n"
    flags = device.cpu_flags(cpuinfo)
    kept = device.probe_file(cpuinfo, flags)
    assert kept.parent == Settings.from_env().home / "hardware" and not kept.exists()
    kept.parent.mkdir(parents=True)
    for faster in (True, False):  # as another process measured and kept it: read, never measured again
        write_json(kept, {"bf16_faster": faster, "fp32_gflops": 1.0, "bf16_gflops": 2.0})
        assert device.cpu_bf16_faster(cpuinfo, flags) is faster
    assert device.probe_file(cpuinfo.replace("9000", "9001"), flags) != kept  # another CPU model: its own timing


def test_a_onednn_isa_cap_gets_its_own_bf16_timing(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 on an AMX CPU makes bf16 slower than fp32: a timing kept under the cap
    must not switch bf16 off for later processes without it."""
    cpuinfo = "model name\t: Test CPU 9000\nflags\t\t: avx2 avx512_bf16 amx_bf16\n"
    flags = device.cpu_flags(cpuinfo)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    uncapped = device.probe_file(cpuinfo, flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    capped = device.probe_file(cpuinfo, flags)
    assert capped != uncapped and capped.parent == uncapped.parent
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert device.probe_file(cpuinfo, flags) not in (capped, uncapped)


def test_the_probe_measures_bf16_against_fp32_and_keeps_it_on_a_cpu_with_the_flag():
    cpuinfo, flags = this_cpu()
    if torch.cuda.is_available() or not (device.CPU_BF16_FLAGS & flags):
        pytest.skip("no CPU bf16 flag here (a bf16 timing would take minutes of emulation)")
    kept = device.probe_file(cpuinfo, flags)
    kept.parent.mkdir(parents=True)
    kept.write_text("{not json")  # a broken file is measured over
    hw = device.probe()
    measured = json.loads(kept.read_text())
    faster = measured["bf16_gflops"] > device.BF16_MARGIN * measured["fp32_gflops"]
    assert measured["bf16_faster"] == faster == hw.cpu_bf16_faster
    assert measured["cpu"] == device.cpu_model(cpuinfo) and measured["torch"] == torch.__version__


def test_the_probe_runs_once_per_process():
    assert device.hardware() is device.hardware()
    assert device._probed.cache_info().misses <= 1


def test_callers_follow_a_simulated_plain_cpu():
    with device.simulated(CPU_PLAIN):
        assert not models.use_bf16("on") and not models.use_bf16("auto")
        assert models.device() == torch.device("cpu")
        assert train.attention_for_training("auto") == "eager"
        assert train.optimizer_name(TrainConfig(), quantized=True) == "adamw_torch_fused"
        assert models.quantization_config(ModelConfig(quantization="4bit"), []).bnb_4bit_compute_dtype == torch.float32
    with device.simulated(CPU_AMX):
        assert models.use_bf16("auto") and not models.use_bf16("off")
        assert models.quantization_config(ModelConfig(quantization="4bit"), []).bnb_4bit_compute_dtype == torch.bfloat16


def test_callers_follow_a_simulated_gpu():
    with device.simulated(GPU_BF16):
        assert models.device() == torch.device("cuda")
        assert train.attention_for_training("auto") == "sdpa"
        assert train.optimizer_name(TrainConfig(), quantized=True) == "paged_adamw_8bit"
    assert device.hardware() == device._probed()  # put back


def test_no_other_module_asks_torch_for_the_device():
    """ftlab decides in core/modeling/device.py; the runtime shipped inside MLflow models cannot import ftlab, so
    it has its own (GPU when present, else CPU in fp32)."""
    callers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if re.search(r"cuda\.is_available\(|cuda\.is_bf16_supported\(|/proc/cpuinfo", p.read_text())]
    assert sorted(callers) == ["core/modeling/device.py", "core/runtime/device.py"]
