"""Import a CUDA-built fisherprec._C from an unpacked wheel and check it.

Run by `make cuda-check` on machines that may have no GPU and no driver: the
module must import (static CUDA runtime) and report CUDA as built; asking for
devices must either count them or raise a clean RuntimeError.
"""

import importlib.util
import pathlib
import sys

import torch  # noqa: F401  (load torch's OpenMP runtime first, as fisherprec does)


def main(root: str) -> int:
    (path,) = pathlib.Path(root, "fisherprec").glob("_C*.so")
    spec = importlib.util.spec_from_file_location("fisherprec_cuda_check._C", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = module.build_info()
    print("cuda build:", dict(info))
    if not info["cuda_built"]:
        print("error: the module was built without CUDA kernels", file=sys.stderr)
        return 1
    try:
        print("cuda devices:", module.cuda_device_count())
    except RuntimeError as err:  # no driver here: reported, not a crash
        print("no usable CUDA device (expected without a GPU):", err)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
