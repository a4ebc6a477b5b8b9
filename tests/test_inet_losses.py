"""I-Net / DC-I-Net losses against direct transliterations of the papers' equations (loops over
subgroups and samples, small tensors): OLP (Eq. 1, gradient Eq. 2), HEP (Eq. 5, its pool),
C2HEP (Eqs. 7-9), the FIFO dictionary, and the criterion's memories in a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from psearch.nn.inet_losses import (
    EMPTY,
    C2HEPLoss,
    FeatureDictionary,
    HEPLoss,
    OLPLoss,
    PairCriterion,
    hard_example_pool,
    positive_pairs,
)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def filled_dictionary(size: int, dim: int, labels: list[int], seed: int = 1) -> FeatureDictionary:
    dictionary = FeatureDictionary(size, dim)
    dictionary.push(unit(len(labels), dim, seed), torch.tensor(labels))
    return dictionary


# A batch of two images: ids 0 and 1 in both, an unlabeled person in image 0, id 2 only in 1.
LABELS = torch.tensor([0, 0, 1, -1, 1, 0, 2])
IMAGES = torch.tensor([0, 0, 0, 0, 1, 1, 1])


def test_positive_pairs_are_cross_image_same_id_in_both_directions() -> None:
    anchor, positive = positive_pairs(LABELS, IMAGES)
    pairs = set(zip(anchor.tolist(), positive.tolist(), strict=True))
    assert pairs == {(0, 5), (5, 0), (1, 5), (5, 1), (2, 4), (4, 2)}


def olp_paper(x: torch.Tensor, labels: list[int], images: list[int], memory: torch.Tensor,
              memory_labels: list[int], scale: float = 1.0) -> float:
    """Eq. 1 with loops: every cross-image positive pair gives two subgroups; negatives are the
    dictionary entries with another label."""
    terms = []
    for a in range(len(x)):
        for p in range(len(x)):
            if labels[a] < 0 or labels[a] != labels[p] or images[a] == images[p]:
                continue
            pos = math.exp(scale * float(x[a] @ x[p]))
            neg = sum(math.exp(scale * float(x[a] @ memory[k])) for k in range(len(memory))
                      if memory_labels[k] != labels[a] and memory_labels[k] != EMPTY)
            terms.append(-math.log(pos / (pos + neg)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_olp_equals_equation_1(scale: float) -> None:
    x = unit(7, 8, 0)
    memory_labels = [0, 1, -1, 2, 3, -1]
    dictionary = filled_dictionary(8, 8, memory_labels)  # 2 slots still empty
    loss = OLPLoss(scale)(x * 3.0, LABELS, IMAGES, dictionary)  # normalised inside
    expected = olp_paper(x, LABELS.tolist(), IMAGES.tolist(), dictionary.feats,
                         dictionary.labels.tolist(), scale)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_olp_gradient_reaches_the_anchor_only_as_equation_2() -> None:
    """With unit inputs, dL/dx for one subgroup is ((q - 1) x_p + sum_k q_k x_nk) / m (Eq. 2
    averaged over the m subgroups): the positive feature receives nothing as a positive."""
    x = unit(2, 6, 3).requires_grad_(True)
    labels, images = torch.tensor([4, 4]), torch.tensor([0, 1])
    dictionary = filled_dictionary(5, 6, [0, 1, 2, -1, 4])
    loss = OLPLoss(1.0)(x, labels, images, dictionary)
    loss.backward()
    negs = dictionary.feats[:4]  # label 4 (the last) is not a negative of id 4
    for a, p in ((0, 1), (1, 0)):
        xa, xp = x[a].detach(), x[p].detach()
        logits = torch.cat([(xa @ xp)[None], negs @ xa])
        q = torch.softmax(logits, 0)
        raw = (q[0] - 1) * xp + (q[1:, None] * negs).sum(0)  # Eq. 2, w.r.t. the unit anchor
        # F.normalize's Jacobian at a unit vector projects out the radial part.
        expected = (raw - (raw @ xa) * xa) / 2
        assert torch.allclose(x.grad[a], expected, atol=1e-6)


def test_olp_without_a_positive_pair_is_zero_with_a_gradient_path() -> None:
    x = unit(3, 4, 0).requires_grad_(True)
    loss = OLPLoss()(x, torch.tensor([0, 1, -1]), torch.tensor([0, 1, 1]),
                     filled_dictionary(4, 4, [2, 3]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_dictionary_is_a_fifo_with_labels() -> None:
    dictionary = FeatureDictionary(4, 2)
    assert dictionary.labels.tolist() == [EMPTY] * 4
    feats = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    dictionary.push(feats[:3], torch.tensor([0, 1, 2]))
    dictionary.push(feats[3:], torch.tensor([3, 4, 5]))  # wraps: 3 at slot 3, 4 and 5 at 0, 1
    assert dictionary.labels.tolist() == [4, 5, 2, 3] and dictionary.ptr.item() == 2
    assert torch.equal(dictionary.feats[0], feats[4])
    dictionary.push(torch.zeros(6, 2), torch.full((6,), 9))  # more than fits: the last 4 stay
    assert dictionary.labels.tolist() == [9] * 4


def test_hep_pool_holds_the_pairs_ids_the_hardest_negatives_and_random_fill() -> None:
    torch.manual_seed(0)
    x = unit(2, 4, 5)
    labels, images = torch.tensor([3, 3]), torch.tensor([0, 1])
    memory = torch.stack([x[0], -x[0], x[1], -x[1], x[0] * 0.9 + x[1] * 0.1])
    dictionary = FeatureDictionary(6, 4)
    dictionary.push(F.normalize(memory, dim=1), torch.tensor([7, 8, 9, -1, 3]))
    # hard=1: anchor 0's hardest negative is slot 0 (label 7, cosine 1), anchor 1's slot 2 (9).
    pool = hard_example_pool(x, labels, images, dictionary, num_classes=20, hard=1, size=3,
                             background=20)
    assert pool.tolist() == [3, 7, 9]
    pool = hard_example_pool(x, labels, images, dictionary, 20, hard=1, size=10, background=20)
    assert len(pool) == 10 and {3, 7, 9} <= set(pool.tolist()) and len(set(pool.tolist())) == 10
    # An unlabeled hardest negative is the background class for HEP, dropped for C2HEP.
    dictionary.labels[0] = -1
    assert 20 in hard_example_pool(x, labels, images, dictionary, 20, 1, 3, background=20)
    assert hard_example_pool(x, labels, images, dictionary, 20, 1, 2).tolist() == [3, 9]


def test_hep_equals_equation_5() -> None:
    torch.manual_seed(0)
    feats, labels = torch.randn(5, 6), torch.tensor([2, -1, 0, 2, 4])
    pool = torch.tensor([0, 2, 3, 4, 6])  # 6 = background of C = 6 identities
    hep = HEPLoss(6, 6)
    loss = hep(feats, labels, pool)
    scores = hep.classifier(F.normalize(feats, dim=1)).detach()
    terms = []
    for i in range(5):  # Eq. 5: -1/n sum_i sum_{j in P} 1(label = j) log softmax over P
        if labels[i] < 0:
            continue
        denominator = sum(math.exp(scores[i, t]) for t in pool.tolist())
        terms.append(-math.log(math.exp(scores[i, labels[i]]) / denominator))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_c2hep_equals_equation_9_then_moves_centres_as_equation_7() -> None:
    c2hep = C2HEPLoss(4, num_classes=6, scale=10.0, momentum=0.5)
    first = unit(6, 4, 1)
    c2hep.update(first, torch.arange(6))  # a class seen for the first time takes its feature
    assert torch.allclose(c2hep.centers, first) and c2hep.seen.all()
    feats, labels = unit(4, 4, 2) * 2, torch.tensor([1, 3, -1, 1])
    pool = torch.tensor([0, 1, 3, 5])
    centers = c2hep.centers.clone()
    loss = c2hep(feats, labels, pool)
    x = F.normalize(feats, dim=1)
    terms = []
    for i in range(4):  # Eq. 9 with d = cosine, lambda = 10
        if labels[i] < 0:
            continue
        cos = {j: float(F.cosine_similarity(x[i], centers[j], dim=0)) for j in pool.tolist()}
        denominator = sum(math.exp(10 * c) for c in cos.values())
        terms.append(-math.log(math.exp(10 * cos[int(labels[i])]) / denominator))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # Eq. 7 with phi = 0.5 and the batch mean of each class (training mode updates).
    mean1 = (x[0] + x[3]) / 2
    assert torch.allclose(c2hep.centers[1], 0.5 * centers[1] + 0.5 * mean1, atol=1e-6)
    assert torch.allclose(c2hep.centers[3], 0.5 * centers[3] + 0.5 * x[1], atol=1e-6)
    assert torch.equal(c2hep.centers[0], centers[0])


def test_c2hep_leaves_out_classes_never_seen() -> None:
    c2hep = C2HEPLoss(4, num_classes=5)
    c2hep.update(unit(2, 4, 0), torch.tensor([0, 2]))
    feats = unit(2, 4, 1).requires_grad_(True)
    loss = c2hep.eval()(feats, torch.tensor([0, 4]), torch.tensor([0, 1, 2, 4]))
    x = F.normalize(feats.detach(), dim=1)
    c = F.normalize(c2hep.centers[[0, 2]], dim=1)
    expected = -torch.log_softmax(10 * x[0] @ c.t(), 0)[0]  # pool {0, 2}; sample 2 unseen
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss,terms", [("olp+hep", {"loss_olp", "loss_hep"}),
                                        ("olp+c2hep", {"loss_olp", "loss_c2hep"}),
                                        ("olp", {"loss_olp"}), ("hep", {"loss_hep"}),
                                        ("c2hep", {"loss_c2hep"})])
def test_criterion_terms_and_memories_survive_a_state_dict_round_trip(loss, terms) -> None:
    torch.manual_seed(0)
    criterion = PairCriterion(loss, 8, num_classes=5, dictionary_size=16, pool_size=3,
                              hard_negatives=2).train()
    for _ in range(3):
        out = criterion(torch.randn(7, 8), LABELS, IMAGES)
        assert set(out) == terms and all(torch.isfinite(v) for v in out.values())
    assert criterion.dictionary.ptr.item() == 21 % 16
    state = criterion.state_dict()
    assert "dictionary.feats" in state and "dictionary.labels" in state
    if "c2hep" in loss:
        assert state["classify.centers"].shape == (5, 8) and state["classify.seen"].sum() == 3
    again = PairCriterion(loss, 8, num_classes=5, dictionary_size=16)
    again.load_state_dict(state)
    assert torch.equal(again.dictionary.feats, criterion.dictionary.feats)
