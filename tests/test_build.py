import subprocess
import sys

import torch

import fisherprec


def test_version_is_single_sourced():
    from fisherprec._version import __version__

    assert fisherprec.__version__ == __version__
    assert fisherprec.build_info()["version"] == __version__


def test_build_info_reports_the_build():
    info = fisherprec.build_info()
    for key in (
        "compiler",
        "openmp",
        "openmp_max_threads",
        "threads",
        "cuda_built",
        "cuda_archs",
        "cuda_available",
        "cuda_unavailable_reason",
        "torch",
    ):
        assert key in info, key
    assert info["threads"] == torch.get_num_threads()
    assert info["cuda_available"] == fisherprec.cuda_available()
    if info["cuda_built"]:
        assert info["cuda_archs"]
    if not info["cuda_available"]:
        assert isinstance(info["cuda_unavailable_reason"], str) and info["cuda_unavailable_reason"]


def test_cuda_available_is_false_without_a_usable_device():
    if not torch.cuda.is_available():
        assert fisherprec.cuda_available() is False


def test_unknown_attribute_raises():
    try:
        fisherprec.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_demo_command_runs():
    result = subprocess.run(
        [sys.executable, "-m", "fisherprec", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "cuda_built" in result.stdout and "sum_of_squares" in result.stdout
