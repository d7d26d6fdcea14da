"""The fuzz worker: bad and edge-case inputs for every public op, every
registered fisherprec optimizer and every estimator of the contract suite.

Run by test_fuzz.py in a subprocess, so that a crash (segfault, abort) fails
a test instead of killing the run::

    python -m tests.fuzz AREA CASES SEED LOG

It prints ``cases=N`` on success and raises (exit code 1) on the first
finding; LOG holds one line per case, so the last line names the case a
crash happened in. Cases come from a seeded generator: a failure reproduces
with the same AREA, CASES and SEED.

What counts as a finding:

- an exception other than the clear ones (TypeError, ValueError,
  RuntimeError, FloatingPointError, OverflowError) — e.g. IndexError,
  KeyError, ZeroDivisionError — or a crash;
- an op that accepts a tensor it cannot address correctly: wrong dtype,
  non-contiguous or expanded strides, a device other than its siblings', a
  written argument aliasing another argument;
- an optimizer step or load, or an estimator update, that raises after
  modifying anything;
- non-finite output from finite, moderate inputs and valid settings.

New ops are covered by adding a valid-sample builder to ``OP_SAMPLES``
(test_fuzz.py checks that every public op has one); optimizers and
estimators by registering them (fisherprec.optim.registry, tests/fisher_kinds.py).
"""

from __future__ import annotations

import copy
import faulthandler
import random
import sys
from collections.abc import Callable
from typing import Any

import torch

from fisherprec import ops
from fisherprec.optim.registry import REGISTRY
from tests.fisher_kinds import KINDS

CLEAR_ERRORS = (TypeError, ValueError, RuntimeError, FloatingPointError, OverflowError)


class Finding(AssertionError):
    pass


# --------------------------------------------------------------- op samples
# Each builder returns (args, kwargs, written): a valid call of the op with
# fresh random inputs of a random small size, and the names of the arguments
# it writes (aliasing any of them with another argument must be refused).
Sample = tuple[dict[str, Any], dict[str, Any], set[str]]


def _rand(rng: random.Random, *shape: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _sizes(rng: random.Random, count: int) -> list[int]:
    return [rng.choice([1, 2, 3, 7, 16, 17, 33]) for _ in range(count)]


def _sum_of_squares(rng):
    return {"tensors": [_rand(rng, n) for n in _sizes(rng, 2)]}, {}, set()


def _diag_step(rng):
    sizes = _sizes(rng, 2)
    args = {
        "params": [_rand(rng, n) for n in sizes],
        "grads": [_rand(rng, n) for n in sizes],
        "exp_avgs": [torch.zeros(n) for n in sizes],
        "exp_avg_sqs": [torch.zeros(n) for n in sizes],
    }
    kwargs = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step": 1.0}
    return args, kwargs, {"params", "exp_avgs", "exp_avg_sqs"}


def _diag_fisher_update(rng):
    n, b = _sizes(rng, 2)
    args = {"state": torch.zeros(n, dtype=torch.float64), "grads": _rand(rng, b, n)}
    return args, {"old_weight": 0.5, "new_weight": 0.5}, {"state"}


def _block_outer_update(rng):
    b = rng.choice([1, 3, 4, 8])
    sizes = _sizes(rng, 2)
    args = {
        "states": [torch.zeros(ops.block_shape(n, b)) for n in sizes],
        "rows": [_rand(rng, 2, n) for n in sizes],
    }
    return args, {"block_size": b, "old_weight": 0.9, "new_weight": 0.1}, {"states"}


def _block_inv_root(rng):
    b = rng.choice([1, 3, 4, 8])
    sizes = _sizes(rng, 2)
    states = []
    for n in sizes:
        g = _rand(rng, ops.block_shape(n, b)[0], b, b)
        states.append(g @ g.transpose(1, 2))
    args = {
        "states": states,
        "roots": [torch.zeros_like(s) for s in states],
        "status": [torch.zeros(s.shape[0], dtype=torch.int32) for s in states],
    }
    kwargs = {"numels": sizes, "block_size": b, "damping": 1e-3}
    return args, kwargs, {"roots", "status"}


def _block_fisher_step(rng):
    b = rng.choice([1, 3, 4, 8])
    sizes = _sizes(rng, 2)
    args = {
        "params": [_rand(rng, n) for n in sizes],
        "grads": [_rand(rng, n) for n in sizes],
        "exp_avgs": [torch.zeros(n) for n in sizes],
        "exp_avg_sqs": [torch.zeros(n) for n in sizes],
        "roots": [torch.eye(b).expand(ops.block_shape(n, b)).contiguous() for n in sizes],
        "status": [torch.zeros(ops.block_shape(n, b)[0], dtype=torch.int32) for n in sizes],
    }
    kwargs = {
        "block_size": b,
        "beta1": 0.9,
        "beta2": 0.999,
        "step_size": 1e-3,
        "inv_c2_root": 1.0,
        "eps": 1e-8,
        "decay": 1.0,
    }
    return args, kwargs, {"params", "exp_avgs", "exp_avg_sqs"}


def _window(rng):
    sizes = _sizes(rng, 2)
    rank = rng.choice([1, 2, 5])
    return sizes, rank, _rand(rng, rank, sum(sizes))


def _lowrank_dots(rng):
    sizes, rank, window = _window(rng)
    return {"window": window, "tensors": [_rand(rng, n) for n in sizes]}, {"columns": rank}, set()


def _lowrank_insert(rng):
    sizes, rank, window = _window(rng)
    args = {"window": window, "tensors": [_rand(rng, n) for n in sizes]}
    return args, {"slot": rank - 1, "columns": rank}, {"window"}


def _lowrank_stats(rng):
    sizes, rank, window = _window(rng)
    args = {
        "grads": [_rand(rng, n) for n in sizes],
        "exp_avg": [torch.zeros(n) for n in sizes],
        "exp_avg_sq": [torch.zeros(n) for n in sizes],
        "window": window,
    }
    kwargs = {"columns": rank, "slot": 0, "beta1": 0.9, "beta2": 0.999}
    return args, kwargs, {"exp_avg", "exp_avg_sq", "window"}


def _lowrank_combine(rng):
    sizes, rank, window = _window(rng)
    args = {
        "out": [_rand(rng, n) for n in sizes],
        "x": [_rand(rng, n) for n in sizes],
        "window": window,
        "coef": _rand(rng, rank + 1, dtype=torch.float64),
    }
    return args, {"columns": rank}, {"out"}


def _bellman_backup(rng):
    states, actions = rng.choice([1, 3, 10]), rng.choice([1, 2])
    succ = 2
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    rows = states * actions
    args = {
        "indptr": torch.arange(0, rows * succ + 1, succ),
        "indices": torch.randint(0, states, (rows * succ,), generator=g),
        "values": torch.full((rows * succ,), 0.5, dtype=torch.float64),
        "reward": _rand(rng, states, actions, dtype=torch.float64),
        "v": _rand(rng, states, dtype=torch.float64),
    }
    return args, {"gamma": 0.9}, set()


def _design_score_step(rng):
    n, p = rng.choice([1, 4, 9]), rng.choice([1, 3])
    f64 = torch.float64
    args = {
        "pool": _rand(rng, n, p, dtype=f64),
        "b": _rand(rng, p, dtype=f64),
        "c": _rand(rng, p, dtype=f64),
        "s": _rand(rng, n, dtype=f64).abs(),
        "t": _rand(rng, n, dtype=f64).abs(),
        "mask": torch.zeros(n, dtype=torch.bool),
        "out": torch.zeros(2, dtype=f64),
    }
    return args, {"beta": 0.5, "gamma": 0.1, "eta": 1.0}, {"s", "t", "out"}


def _symmetric_eigh(rng):
    k, n = rng.choice([1, 3]), rng.choice([1, 2, 5])
    m = _rand(rng, k, n, n, dtype=rng.choice([torch.float32, torch.float64]))
    return {"matrices": m @ m.mT}, {}, set()


OP_SAMPLES: dict[str, Callable[[random.Random], Sample]] = {
    "sum_of_squares": _sum_of_squares,
    "diag_step_": _diag_step,
    "diag_fisher_update_": _diag_fisher_update,
    "block_outer_update_": _block_outer_update,
    "block_inv_root_": _block_inv_root,
    "block_fisher_step_": _block_fisher_step,
    "lowrank_dots": _lowrank_dots,
    "lowrank_insert": _lowrank_insert,
    "lowrank_stats": _lowrank_stats,
    "lowrank_combine": _lowrank_combine,
    "bellman_backup": _bellman_backup,
    "design_score_step": _design_score_step,
    "symmetric_eigh": _symmetric_eigh,
}

# ---------------------------------------------------------------- mutations
# "layout" mutations give a tensor a kernel cannot take as it is: the op must
# refuse them. "value" mutations keep the layout: the op may accept them.
BAD_SCALARS = [float("nan"), float("inf"), -1.0, 0.0, 1e20, -1e300, 2**63, True, "x", None]


def _values(rng: random.Random, t: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point() or t.numel() == 0:
        return t
    value = rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, 1e-30, 0.0])
    out = t.clone()
    out.view(-1)[rng.randrange(out.numel())] = value
    return out


def _layout(
    rng: random.Random, t: torch.Tensor, *, alone: bool = False
) -> tuple[torch.Tensor, str] | None:
    # A lone tensor argument on the meta device is the all-meta case, which the
    # fake must accept; with others it is a device mismatch to refuse.
    kinds = ["dtype"] if alone else ["dtype", "meta"]
    if t.numel() > 1:
        kinds += ["strided", "expanded"]
    kind = rng.choice(kinds)
    if kind == "dtype":
        others = [d for d in (torch.int64, torch.complex64, torch.bool, torch.int8) if d != t.dtype]
        return t.to(rng.choice(others)), kind
    if kind == "meta":
        return torch.empty_like(t, device="meta"), kind
    if kind == "strided":
        return torch.stack([t, t], dim=-1)[..., 0], kind
    return t.reshape(-1)[:1].expand(t.shape), kind


def _shape(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(-1)
    return flat[: max(flat.numel() - 1, 0)] if flat.numel() > 1 else t.reshape(1, *t.shape, 1)


def _tensor_slots(args: dict[str, Any]) -> list[tuple[str, int | None]]:
    slots: list[tuple[str, int | None]] = []
    for name, value in args.items():
        if isinstance(value, torch.Tensor):
            slots.append((name, None))
        elif isinstance(value, list):
            slots += [(name, i) for i in range(len(value))]
    return slots


def _get(args, slot):
    name, i = slot
    return args[name] if i is None else args[name][i]


def _put(args, slot, value):
    name, i = slot
    if i is None:
        args[name] = value
    else:
        args[name] = list(args[name])
        args[name][i] = value


def _is_written(slot, written):
    return slot[0] in written


def fuzz_op(name: str, rng: random.Random) -> str:
    """One mutated call of op `name`; returns the case's description."""
    args, kwargs, written = OP_SAMPLES[name](rng)
    fn = getattr(ops, name)
    slots = _tensor_slots(args)
    kinds = ["layout", "layout", "alias", "values", "shape", "scalar", "list", "empty", "meta"]
    kind = rng.choice(kinds)
    must_refuse = must_accept = False
    detail = ""
    if kind == "layout":
        slot = rng.choice(slots)
        mutated = _layout(rng, _get(args, slot), alone=len(slots) == 1)
        if mutated is not None:
            tensor, detail = mutated
            _put(args, slot, tensor)
            must_refuse = True
        detail = f"{slot} {detail}"
    elif kind == "alias":
        a, b = rng.sample(slots, 2) if len(slots) > 1 else (slots[0], slots[0])
        src, dst = _get(args, a), _get(args, b)
        if a != b and src.dtype == dst.dtype and src.numel() >= dst.numel():
            _put(args, b, src.reshape(-1)[: dst.numel()].view(dst.shape))
            must_refuse = _is_written(a, written) or _is_written(b, written)
        detail = f"{a} -> {b}"
    elif kind == "values":
        slot = rng.choice(slots)
        _put(args, slot, _values(rng, _get(args, slot)))
        detail = str(slot)
    elif kind == "shape":
        slot = rng.choice(slots)
        _put(args, slot, _shape(_get(args, slot)))
        detail = str(slot)
    elif kind == "scalar":
        scalars = [k for k, v in kwargs.items() if isinstance(v, (int, float)) and k != "numels"]
        if scalars:
            key = rng.choice(scalars)
            kwargs[key] = rng.choice(BAD_SCALARS)
            detail = f"{key}={kwargs[key]!r}"
    elif kind == "list":
        lists = [k for k, v in args.items() if isinstance(v, list)]
        if lists:
            key = rng.choice(lists)
            args[key] = rng.choice([[], args[key][:1], args[key][0], tuple(args[key])])
            detail = key
    elif kind == "meta":  # every tensor on the meta device: the fake kernel runs
        for slot in slots:
            _put(args, slot, torch.empty_like(_get(args, slot), device="meta"))
        must_accept = True
    else:  # empty
        slot = rng.choice(slots)
        t = _get(args, slot)
        _put(args, slot, t.reshape(-1)[:0])
        detail = str(slot)
    case = f"op {name} {kind} {detail}"
    try:
        fn(**args, **kwargs)
    except CLEAR_ERRORS as error:
        if must_accept:
            raise Finding(f"{case}: refused a valid call on meta tensors: {error}") from error
        return case
    except Exception as error:
        raise Finding(f"{case}: unclear {type(error).__name__}: {error}") from error
    if must_refuse:
        raise Finding(f"{case}: accepted a tensor the kernel cannot address as it is")
    return case


# ----------------------------------------------------------------- optimizers
FISHER_OPTIMIZERS = sorted(n for n, e in REGISTRY.items() if e.fisher is not None)
BAD_SETTINGS = {
    "lr": [-1.0, float("nan"), float("inf")],
    "betas": [(1.5, 0.9), (0.9, 1.0), (-0.1, 0.9), (0.9,)],
    "eps": [-1.0, float("nan")],
    "weight_decay": [-0.1, float("inf")],
    "damping": [-1.0, float("nan")],
    "power": [0.0, -0.5, float("inf")],
    "graft": ["bogus", 1],
    "update_every": [0, -3, 1.5, True],
    "block_size": [0, 10**6, 2.0],
    "rank": [0, 10**6],
    "decay": [0.0, 5.0, float("nan")],
    "rcond": [-1.0, 1.0],
    "nonfinite": ["ignore", None],
}


def _param_set(rng: random.Random) -> list[torch.nn.Parameter]:
    dtype = rng.choice([torch.float32, torch.float32, torch.bfloat16, torch.float64])
    shapes = [tuple(_sizes(rng, rng.choice([1, 2]))) for _ in range(rng.choice([1, 2, 3]))]
    return [torch.nn.Parameter(_rand(rng, *s, dtype=dtype)) for s in shapes]


def _grads(rng: random.Random, params, *, bad: bool) -> str:
    kind = "finite"
    for p in params:
        p.grad = _rand(rng, *p.shape, dtype=p.dtype) * rng.choice([1.0, 1e-3, 10.0])
    if bad:
        p = rng.choice(params)
        kind = rng.choice(["nan", "inf", "huge", "tiny", "zero", "none"])
        if kind == "none":
            p.grad = None
        else:
            value = {"nan": float("nan"), "inf": float("inf"), "huge": 1e30, "tiny": 1e-30}.get(
                kind, 0.0
            )
            p.grad.view(-1)[0] = value
    return kind


def _snapshot(opt):
    return (
        [p.detach().clone() for g in opt.param_groups for p in g["params"]],
        copy.deepcopy(opt.state_dict()),
    )


def _same(opt, snapshot) -> bool:
    params, state = snapshot
    now = [p.detach() for g in opt.param_groups for p in g["params"]]
    if any(not _equal(a, b) for a, b in zip(params, now, strict=True)):
        return False
    return _state_equal(state, opt.state_dict())


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and bool(((a == b) | (a.isnan() & b.isnan())).all())
    )


def _state_equal(a: dict, b: dict) -> bool:
    if a["param_groups"] != b["param_groups"] or a["state"].keys() != b["state"].keys():
        return False
    for pid, entries in a["state"].items():
        other = b["state"][pid]
        if entries.keys() != other.keys():
            return False
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                if not (isinstance(other[key], torch.Tensor) and _equal(value, other[key])):
                    return False
            elif value != other[key]:
                return False
    return True


def _corrupt(rng: random.Random, state_dict: dict) -> tuple[dict, str]:
    sd = copy.deepcopy(state_dict)
    entries = [(pid, key) for pid, st in sd["state"].items() for key in st]
    kind = rng.choice(["shape", "drop", "extra", "group", "dtype"])
    if kind == "group":
        group = sd["param_groups"][0]
        key = rng.choice(sorted(k for k in group if k in BAD_SETTINGS))
        group[key] = rng.choice(BAD_SETTINGS[key])
        return sd, f"group {key}={group[key]!r}"
    if not entries:
        return sd, "nothing"
    pid, key = rng.choice(entries)
    value = sd["state"][pid][key]
    if kind == "shape" and isinstance(value, torch.Tensor) and value.dim() > 0:
        sd["state"][pid][key] = (
            value.reshape(-1)[:-1] if value.numel() > 1 else value.reshape(-1).repeat(2)
        )
    elif kind == "drop":
        del sd["state"][pid][key]
    elif kind == "extra":
        sd["state"][pid]["bogus"] = torch.zeros(3)
    elif kind == "dtype" and isinstance(value, torch.Tensor) and value.is_floating_point():
        sd["state"][pid][key] = value.to(torch.complex64)
    return sd, f"{kind} {key}"


def fuzz_optimizer(name: str, rng: random.Random) -> str:
    entry = REGISTRY[name]
    params = _param_set(rng)
    settings = {**entry.defaults}
    if "update_every" in settings:
        settings["update_every"] = rng.choice([1, 2])
    settings["nonfinite"] = rng.choice(["propagate", "raise", "skip"])
    case = f"optim {name} {[tuple(p.shape) for p in params]} {params[0].dtype}"
    try:
        opt = entry.factory(params, **settings)
    except CLEAR_ERRORS:
        return case + " (refused at construction)"
    action = rng.choice(["group", "step", "step", "load"])
    if action == "group":
        keys = [k for k in BAD_SETTINGS if k in opt.defaults]
        key = rng.choice(keys)
        value = rng.choice(BAD_SETTINGS[key])
        case += f" add_param_group {key}={value!r}"
        try:
            opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(3))], key: value})
        except CLEAR_ERRORS:
            if len(opt.param_groups) != 1:
                raise Finding(f"{case}: a refused group was kept") from None
            return case
        except Exception as error:
            raise Finding(f"{case}: unclear {type(error).__name__}: {error}") from error
        raise Finding(f"{case}: accepted")
    _grads(rng, params, bad=False)
    opt.step()
    if action == "step":
        kind = _grads(rng, params, bad=rng.random() < 0.7)
        case += f" step grad={kind} policy={settings['nonfinite']}"
        snapshot = _snapshot(opt)
        try:
            opt.step()
        except CLEAR_ERRORS:
            if not _same(opt, snapshot):
                raise Finding(f"{case}: the step raised after modifying state") from None
            return case
        except Exception as error:
            raise Finding(f"{case}: unclear {type(error).__name__}: {error}") from error
        finite_in = kind in ("finite", "tiny", "zero", "none")
        if finite_in and not all(bool(torch.isfinite(p).all()) for p in params):
            raise Finding(f"{case}: non-finite parameters from finite gradients")
        return case
    corrupted, detail = _corrupt(rng, opt.state_dict())
    case += f" load {detail}"
    snapshot = _snapshot(opt)
    try:
        opt.load_state_dict(corrupted)
    except CLEAR_ERRORS:
        if not _same(opt, snapshot):
            raise Finding(f"{case}: the load raised after modifying state") from None
        return case
    except Exception as error:
        raise Finding(f"{case}: unclear {type(error).__name__}: {error}") from error
    _grads(rng, params, bad=False)
    try:  # an accepted checkpoint must step cleanly
        opt.step()
    except Exception as error:
        raise Finding(
            f"{case}: accepted, then step raised {type(error).__name__}: {error}"
        ) from error
    return case


# ----------------------------------------------------------------- estimators
def fuzz_estimator(kind_index: int, rng: random.Random) -> str:
    kind = KINDS[kind_index]
    p = rng.choice([1, 3, 7, 17])
    estimator = kind.make(p, None, 1e-3)
    estimator.update(_rand(rng, 2, p, dtype=torch.float64))
    g = _rand(rng, rng.choice([1, 3]), p, dtype=rng.choice([torch.float32, torch.float64]))
    action = rng.choice(["update", "update", "mv", "inv_root_mv"])
    mutation = rng.choice(["values", "layout", "shape", "empty", "ndim", "power"])
    if mutation == "values":
        g = _values(rng, g)
    elif mutation == "layout":
        mutated = _layout(rng, g)
        g = mutated[0] if mutated else g
    elif mutation == "shape":
        g = _shape(g)
    elif mutation == "empty":
        g = g[:0]
    elif mutation == "ndim":
        g = g.reshape(1, *g.shape)
    power = rng.choice(BAD_SCALARS) if mutation == "power" else 0.5
    case = f"estimator {kind.name} P={p} {action} {mutation} {tuple(g.shape)} {g.dtype}"
    before = estimator.to_dense().clone()
    count = estimator.num_observations
    try:
        if action == "update":
            estimator.update(g)
            out = estimator.to_dense()
        elif action == "mv":
            out = estimator.mv(g)
        else:
            out = estimator.inv_root_mv(g, power)
    except CLEAR_ERRORS:
        if not (_equal(estimator.to_dense(), before) and estimator.num_observations == count):
            raise Finding(f"{case}: raised after modifying the estimator") from None
        return case
    except Exception as error:
        raise Finding(f"{case}: unclear {type(error).__name__}: {error}") from error
    finite_in = (
        g.is_floating_point()
        and g.device.type != "meta"
        and bool(torch.isfinite(g).all())
        and (g.numel() == 0 or g.abs().max() < 1e20)
    )
    # (A huge power overflows honestly: (λ + s)^(-1e20) is not a float.)
    moderate = mutation not in ("values", "power")
    if finite_in and moderate and out.numel() and not bool(torch.isfinite(out).all()):
        raise Finding(f"{case}: non-finite result from finite input")
    return case


# ---------------------------------------------------------------------- main
AREAS: dict[str, list[Callable[[random.Random], str]]] = {
    "ops": [lambda rng, n=n: fuzz_op(n, rng) for n in OP_SAMPLES],
    "optimizers": [lambda rng, n=n: fuzz_optimizer(n, rng) for n in FISHER_OPTIMIZERS],
    "estimators": [lambda rng, i=i: fuzz_estimator(i, rng) for i in range(len(KINDS))],
}


def run(area: str, cases: int, seed: int, log_path: str) -> int:
    torch.set_num_threads(1)
    fuzzers = AREAS[area]
    with open(log_path, "w", buffering=1) as log:
        faulthandler.enable(file=sys.stderr)
        for index in range(cases):
            rng = random.Random(seed * 1_000_003 + index)
            fuzzer = fuzzers[index % len(fuzzers)]
            log.write(f"{index} seed={seed} (started)\n")
            log.write(f"{index} {fuzzer(rng)}\n")
    return cases


if __name__ == "__main__":
    area, cases, seed, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    import warnings

    warnings.simplefilter("ignore")  # torch's own warnings on odd inputs are not findings
    print(f"cases={run(area, cases, seed, log)}")
