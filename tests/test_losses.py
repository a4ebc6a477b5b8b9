"""OIM and softmax identity losses, checked against direct NumPy computations."""

import numpy as np
import pytest
import torch

from psearch.nn.losses import OIMLoss, SoftmaxLoss

SCALE = 30.0


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def setup():
    """A 3-identity table, a 4-slot queue with its pointer at slot 3, and a batch of 5 features
    in which identity 0 appears twice, identity 2 once, and two people are unlabeled."""
    rng = np.random.default_rng(0)
    dim = 6
    loss = OIMLoss(dim, num_ids=3, queue_size=4, scale=SCALE, momentum=0.5).double()
    lut, queue = unit(rng.normal(size=(3, dim))), unit(rng.normal(size=(4, dim)))
    loss.lut.copy_(torch.from_numpy(lut))
    loss.queue.copy_(torch.from_numpy(queue))
    loss.queue_ptr.fill_(3)
    x = rng.normal(size=(5, dim))
    labels = np.array([0, 2, 0, -1, -1])
    return loss, lut, queue, x, labels


def test_oim_loss_and_gradient_match_numpy(setup):
    loss_fn, lut, queue, x, labels = setup
    features = torch.tensor(x, requires_grad=True)
    loss = loss_fn(features, torch.from_numpy(labels))
    loss.backward()

    f = unit(x)
    table = np.concatenate([lut, queue])
    labeled = labels >= 0
    logits = SCALE * f[labeled] @ table.T
    probs = softmax(logits)
    onehot = np.eye(len(table))[labels[labeled]]
    expected = -np.mean(np.log(probs[onehot.astype(bool)]))
    assert loss.item() == pytest.approx(expected, rel=1e-10)

    # dL/df for labeled rows (table constant), 0 for unlabeled; then through f = x / |x|.
    grad_f = np.zeros_like(f)
    grad_f[labeled] = SCALE * (probs - onehot) @ table / labeled.sum()
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    grad_x = (grad_f - f * np.sum(grad_f * f, axis=1, keepdims=True)) / norms
    np.testing.assert_allclose(features.grad.numpy(), grad_x, rtol=1e-9, atol=1e-12)
    assert np.all(features.grad.numpy()[~labeled] == 0)


def test_oim_updates_table_with_batch_mean_and_fills_queue_circularly(setup):
    loss_fn, lut, queue, x, labels = setup
    loss_fn(torch.from_numpy(x), torch.from_numpy(labels))
    f = unit(x)

    expected_lut = lut.copy()
    expected_lut[0] = unit(0.5 * lut[0] + 0.5 * (f[0] + f[2]) / 2)  # seen twice: the mean
    expected_lut[2] = unit(0.5 * lut[2] + 0.5 * f[1])
    np.testing.assert_allclose(loss_fn.lut.numpy(), expected_lut, rtol=1e-12)  # id 1 untouched

    expected_queue = queue.copy()
    expected_queue[3], expected_queue[0] = f[3], f[4]  # from slot 3, wrapping to slot 0
    np.testing.assert_allclose(loss_fn.queue.numpy(), expected_queue, rtol=1e-12)
    assert int(loss_fn.queue_ptr) == 1


def test_oim_keeps_the_last_queue_size_unlabeled_of_a_large_batch(setup):
    loss_fn, _, _, _, _ = setup
    x = np.random.default_rng(1).normal(size=(6, 6))
    loss = loss_fn(torch.from_numpy(x), torch.full((6,), -1))
    assert loss.item() == 0.0  # no labeled sample: no loss term
    f = unit(x)
    queue = loss_fn.queue.numpy()
    # written one by one from slot 3 on (3, 0, 1, 2, 3, 0): the last four remain
    np.testing.assert_allclose(queue[[1, 2, 3, 0]], f[2:], rtol=1e-12)
    assert int(loss_fn.queue_ptr) == (3 + 6) % 4


def test_oim_does_not_update_in_eval_mode(setup):
    loss_fn, lut, queue, x, labels = setup
    loss_fn.eval()
    loss_fn(torch.from_numpy(x), torch.from_numpy(labels))
    np.testing.assert_array_equal(loss_fn.lut.numpy(), lut)
    np.testing.assert_array_equal(loss_fn.queue.numpy(), queue)


def test_oim_state_is_saved_in_state_dict():
    assert set(OIMLoss(8, 5, queue_size=7).state_dict()) == {"lut", "queue", "queue_ptr"}


def test_softmax_loss_ignores_unlabeled():
    torch.manual_seed(0)
    loss_fn = SoftmaxLoss(4, 3)
    x = torch.randn(4, 4)
    labels = torch.tensor([1, -1, 2, -1])
    expected = torch.nn.functional.cross_entropy(loss_fn.classifier(x[[0, 2]]), labels[[0, 2]])
    assert loss_fn(x, labels).item() == pytest.approx(expected.item())
