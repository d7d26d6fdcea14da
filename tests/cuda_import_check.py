"""Import a CUDA-built fisherprec._C from an unpacked wheel and check it.

Run by `make cuda-check` on machines that may have no GPU and no driver: the
module must import (static CUDA runtime) and report CUDA as built; asking for
devices must either count them or raise a clean RuntimeError; and, imported
as the fisherprec package, every op in torch.ops.fisherprec must have a CUDA
kernel (a registration left unreachable is found here, without a GPU).
"""

import importlib.util
import pathlib
import sys

import torch  # (load torch's OpenMP runtime first, as fisherprec does)


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
    return check_cuda_kernels(root)


def check_cuda_kernels(root: str) -> int:
    """Import the built package itself and list ops without a CUDA kernel."""
    # An editable install redirects `import fisherprec` to the source tree
    # from sys.meta_path, ahead of sys.path: take it out for this process.
    sys.meta_path[:] = [
        f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"
    ]
    sys.path.insert(0, str(pathlib.Path(root).resolve()))
    for name in [m for m in sys.modules if m == "fisherprec" or m.startswith("fisherprec.")]:
        del sys.modules[name]
    import fisherprec.ops as ops

    assert ops.CUDA_BUILT, "the package imported is not the CUDA build"
    namespace = torch.ops.fisherprec
    missing = [
        name
        for name in dir(namespace)
        if isinstance(getattr(namespace, name, None), torch._ops.OpOverloadPacket)
        and not torch._C._dispatch_has_kernel_for_dispatch_key(
            getattr(namespace, name).default.name(), "CUDA"
        )
    ]
    print("ops:", sorted(n for n in dir(namespace) if not n.startswith("_")))
    # Every op goes through ops._native.native_op, which registers the CUDA kernel
    # with the CPU one: an op defined some other way would escape that guarantee.
    unregistered = sorted(
        name
        for name in dir(namespace)
        if isinstance(getattr(namespace, name, None), torch._ops.OpOverloadPacket)
        and name not in ops.REGISTRY
    )
    if unregistered:
        print(f"error: ops not in fisherprec.ops.REGISTRY: {unregistered}", file=sys.stderr)
        return 1
    if missing:
        print(f"error: ops without a CUDA kernel: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
