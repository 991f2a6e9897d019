"""The host target switches off the vector extensions LLVM's CPU name implies but the CPU lacks."""
import pytest

pytest.importorskip("tvm")

from nar_tvm.passes.host_target import cpuinfo_flags, host_target, missing_features  # noqa: E402

ZEN4_VECTOR = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
               "avx512bf16", "avx512bitalg", "avx512ifma", "avx512vbmi", "avx512vbmi2", "avx512vnni",
               "avx512vpopcntdq"}


def test_a_zen4_whose_hypervisor_hides_avx512_gets_every_avx512_extension_switched_off():
    hidden = {"avx", "avx2", "fma", "f16c", "sse4_2", "pni"}
    missing = missing_features("znver4", hidden)
    assert missing and all(f.startswith("avx512") for f in missing)
    assert "avx512f" in missing and "avx512bw" in missing
    # cpuinfo spells them with underscores: avx512_bf16 is avx512bf16.
    assert missing_features("znver4", {f.replace("avx512b", "avx512_b") for f in ZEN4_VECTOR}) == []


def test_a_cpu_that_reports_all_it_implies_keeps_the_bare_target_its_datasets_were_measured_with():
    assert missing_features("znver4", ZEN4_VECTOR) == []
    assert missing_features("znver3", {"avx", "avx2", "fma", "f16c"}) == []
    assert missing_features("znver4", None) == []  # no cpuinfo (not Linux/x86): trust LLVM


def test_host_target_names_the_switched_off_extensions_in_mattr(tmp_path):
    import tvm

    mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    target = host_target(num_cores=2, flags=set())
    assert target["mcpu"] == mcpu and target["num-cores"] == 2
    assert target.get("mattr", []) == [f"-{f}" for f in missing_features(mcpu, set())]
    # And TVM takes it: the switched-off extensions are gone from the target's features.
    features = {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target(target))}
    assert not features & set(missing_features(mcpu, set()))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16 sse4_1\n")
    assert cpuinfo_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512bf16", "sse41"}
    assert cpuinfo_flags(str(tmp_path / "none")) is None
