import pytest
import torch
import torch.nn.functional as F

import fisherprec as fp


def _model(generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def test_matches_a_loop_of_backward_passes(generator):
    model = _model(generator)
    x = torch.randn(6, 5, generator=generator)
    y = torch.randint(0, 3, (6,), generator=generator)
    got = fp.fisher.per_sample_grads(model, F.cross_entropy, x, y)
    rows = []
    for i in range(6):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(got, torch.stack(rows))
    per_param = fp.fisher.per_sample_grads(
        model, F.cross_entropy, x, y, flatten=False, chunk_size=4
    )
    assert list(per_param) == [n for n, _ in model.named_parameters()]
    assert per_param["0.weight"].shape == (6, 7, 5)


def test_bad_input(generator):
    model = _model(generator)
    with pytest.raises(ValueError, match="inputs has 4 samples but targets has 3"):
        fp.fisher.per_sample_grads(
            model, F.cross_entropy, torch.randn(4, 5), torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        fp.fisher.per_sample_grads(lambda x: x, F.mse_loss, torch.randn(4, 5), torch.randn(4))
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fp.fisher.per_sample_grads(
            model, F.cross_entropy, torch.randn(4, 5), torch.zeros(4, dtype=torch.long)
        )
