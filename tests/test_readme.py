"""The README's quick start must run as written."""

import pathlib

import torch

import fisherprec  # noqa: F401  (import, and rebuild if needed, before output is captured)

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_ten_line_example_runs_and_trains(capsys):
    code = README.read_text().split("## Ten lines\n\n```python\n", 1)[1].split("```", 1)[0]
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    loss, trace = map(float, capsys.readouterr().out.split())
    assert loss < 0.5 and trace > 0.0  # random targets have variance ≈ 1: it fits them
