"""ReplayMemory: budget, reservoir uniformity, class balance, herding, state and bytes."""

from __future__ import annotations

import io

import pytest
import torch

from lifelong_kd.memory import ReplayMemory, herding_order

# chi-square critical value, 9 degrees of freedom, p = 0.001
CHI2_9DF_P001 = 27.88


def _offer_stream(memory: ReplayMemory, n_samples: int, batch: int, generator: torch.Generator) -> None:
    """Offer samples 0..n-1 (the input is the sample's id) in order, ``batch`` at a time."""
    for start in range(0, n_samples, batch):
        ids = torch.arange(start, min(start + batch, n_samples))
        memory.add(ids[:, None].to(torch.int32), ids % 10, torch.zeros_like(ids), start // 100, generator)


def _grouped(n_per_class: int, labels: list[int], dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (ids as uint8 images), labels and random features of a small labelled set."""
    y = torch.tensor(labels).repeat_interleave(n_per_class)
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)
    features = torch.randn(len(y), dim, generator=torch.Generator().manual_seed(seed))
    return x, y, features


def test_reservoir_never_exceeds_the_budget_and_fills_first():
    memory = ReplayMemory(50)
    generator = torch.Generator().manual_seed(0)
    memory.add(torch.zeros(30, 1, dtype=torch.int32), torch.zeros(30, dtype=torch.long), torch.zeros(30, dtype=torch.long), 0, generator)
    assert len(memory) == 30 and memory.seen_ == 30
    _offer_stream(memory, 1000, 32, generator)
    assert len(memory) == 50 and memory.seen_ == 1030


def test_reservoir_keeps_every_offered_sample_with_equal_probability():
    """Chi-square over 10 position bins: early and late samples are kept equally often (capacity / n)."""
    n_samples, capacity, trials = 500, 50, 300
    kept = torch.zeros(n_samples)
    for trial in range(trials):
        memory = ReplayMemory(capacity)
        _offer_stream(memory, n_samples, 16, torch.Generator().manual_seed(trial))
        kept[memory.x_.flatten().long()] += 1
    assert kept.sum() == capacity * trials
    bins = kept.view(10, -1).sum(1)
    expected = capacity * trials / 10
    chi2 = float(((bins - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_9DF_P001, f"bins {bins.tolist()} vs {expected} each (chi2 {chi2:.1f})"
    # Each sample is kept with probability capacity / n = 0.1: the last one too, not only early ones.
    assert kept[-50:].mean().item() == pytest.approx(trials * 0.1, rel=0.25)


def test_reservoir_is_deterministic_for_a_seed_and_differs_across_seeds():
    memories = []
    for seed in (3, 3, 4):
        memory = ReplayMemory(40)
        _offer_stream(memory, 400, 25, torch.Generator().manual_seed(seed))
        memories.append(memory.x_.flatten())
    assert torch.equal(memories[0], memories[1])
    assert not torch.equal(memories[0], memories[2])


def test_two_samples_of_one_batch_drawn_to_one_slot_leave_the_later():
    memory = ReplayMemory(1)
    generator = torch.Generator().manual_seed(0)
    memory.add(torch.tensor([[7]]), torch.tensor([0]), torch.tensor([0]), 0, generator)
    slots = memory.add(torch.tensor([[1], [2], [3], [4]]), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 0, generator)
    written = torch.nonzero(slots == 0).flatten()
    expected = 7 if len(written) == 0 else int(written[-1]) + 1
    assert int(memory.x_[0, 0]) == expected


def test_class_balanced_gives_every_class_an_equal_share_and_keeps_old_prefixes():
    memory = ReplayMemory(60, "class_balanced")
    generator = torch.Generator().manual_seed(0)
    x, y, _ = _grouped(40, [0, 1])
    memory.update_groups(x, y, torch.zeros_like(y), 0, generator)
    assert torch.bincount(memory.y_).tolist() == [30, 30]
    class_zero = memory.x_[memory.y_ == 0].flatten().tolist()
    x2, y2, _ = _grouped(40, [2, 3, 4])
    memory.update_groups(x2 + 100, y2, torch.zeros_like(y2), 1, generator)
    assert torch.bincount(memory.y_).tolist() == [12] * 5
    assert memory.x_[memory.y_ == 0].flatten().tolist() == class_zero[:12]
    assert len(memory) <= 60 and set(memory.experience_.tolist()) == {0, 1}


def test_groups_are_per_experience_so_a_repeated_label_is_a_new_group():
    """Domain scenario: the same labels in every experience are balanced across experiences."""
    memory = ReplayMemory(40, "class_balanced")
    generator = torch.Generator().manual_seed(0)
    for experience in range(2):
        x, y, _ = _grouped(30, [0, 1])
        memory.update_groups(x, y, torch.zeros_like(y), experience, generator)
    counts = {(int(e), int(label)): int(((memory.experience_ == e) & (memory.y_ == label)).sum()) for e in (0, 1) for label in (0, 1)}
    assert counts == {(0, 0): 10, (0, 1): 10, (1, 0): 10, (1, 1): 10}


def test_herding_hand_example_picks_the_running_mean_closest_to_the_class_mean():
    # mean 0.2. Nearest-to-the-mean would take 1.0 then 1.2; herding takes -0.9 second,
    # because (1.0 - 0.9) / 2 = 0.05 is closer to 0.2 than (1.0 + 1.2) / 2 = 1.1.
    features = torch.tensor([[1.0], [1.2], [-0.9], [5.0], [-5.3]])
    assert herding_order(features, 5).tolist() == [0, 2, 1, 4, 3]
    assert herding_order(features, 2).tolist() == [0, 2]
    assert herding_order(features, 9).tolist() == [0, 2, 1, 4, 3]  # at most N, each once


def test_herding_prefix_means_are_greedy_best():
    features = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    order = herding_order(features, 10)
    mean = features.mean(0)
    for k in range(1, 11):
        prefix = features[order[: k - 1]].sum(0)
        remaining = [i for i in range(30) if i not in order[: k - 1].tolist()]
        distances = [float((mean - (prefix + features[i]) / k).norm()) for i in remaining]
        assert order[k - 1].item() == remaining[min(range(len(remaining)), key=distances.__getitem__)]


def test_herding_memory_stores_each_class_in_herding_order_and_shrinks_to_the_first():
    memory = ReplayMemory(12, "herding")
    x, y, features = _grouped(10, [0, 1])
    memory.update_groups(x, y, torch.zeros_like(y), 0, features=features)
    for label in (0, 1):
        rows = torch.nonzero(y == label).flatten()
        expected = rows[herding_order(features[rows], 6)]
        assert memory.x_[memory.y_ == label].flatten().tolist() == x[expected].flatten().tolist()
    before = memory.x_[memory.y_ == 0].flatten().tolist()
    x2, y2, features2 = _grouped(10, [2, 3], seed=1)
    memory.update_groups(x2 + 50, y2, torch.zeros_like(y2), 1, features=features2)
    assert memory.x_[memory.y_ == 0].flatten().tolist() == before[:3]
    assert torch.bincount(memory.y_).tolist() == [3, 3, 3, 3]


def test_state_dict_round_trips_through_weights_only_load_and_continues_identically():
    memory = ReplayMemory(30)
    _offer_stream(memory, 200, 16, torch.Generator().manual_seed(0))
    memory.add(torch.zeros(4, 1, dtype=torch.int32), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2,
               torch.Generator().manual_seed(1))
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = ReplayMemory(30)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.nbytes == memory.nbytes and restored.seen_ == memory.seen_
    for candidate in (memory, restored):
        _offer_stream(candidate, 100, 16, torch.Generator().manual_seed(5))
    assert torch.equal(memory.x_, restored.x_) and torch.equal(memory.experience_, restored.experience_)
    assert torch.equal(memory.sample(8, torch.Generator().manual_seed(2)).x, restored.sample(8, torch.Generator().manual_seed(2)).x)


def test_nbytes_counts_inputs_labels_task_ids_experiences_and_extras():
    memory = ReplayMemory(10)
    assert memory.nbytes == 0
    x = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    labels = torch.zeros(6, dtype=torch.long)
    memory.add(x, labels, labels, 0, torch.Generator(), {"logits": torch.zeros(6, 10)})
    assert memory.nbytes == 6 * (64 + 3 * 8 + 10 * 4)


def test_extras_are_stored_with_their_samples():
    memory = ReplayMemory(5)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, 40, 8):
        ids = torch.arange(start, start + 8)
        memory.add(ids[:, None], ids, ids, 0, generator, {"logits": ids[:, None].float() * torch.ones(1, 3)})
    assert torch.equal(memory.extras_["logits"][:, 0], memory.x_[:, 0].float())


def test_sample_draws_distinct_samples_reproducibly():
    memory = ReplayMemory(20)
    _offer_stream(memory, 20, 20, torch.Generator())
    draw = memory.sample(15, torch.Generator().manual_seed(0))
    assert len(set(draw.x.flatten().tolist())) == 15
    assert torch.equal(draw.x, memory.sample(15, torch.Generator().manual_seed(0)).x)
    assert len(memory.sample(100, torch.Generator())) == 20


@pytest.mark.parametrize(
    ("arguments", "message"),
    [((0,), "buffer_size must be a positive integer"), ((10, "fifo"), "memory policy must be one of")],
)
def test_bad_arguments_are_clear_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        ReplayMemory(*arguments)


def test_policy_misuse_is_a_clear_error():
    labels = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="update_groups"):
        ReplayMemory(5, "herding").add(torch.zeros(3, 1), labels, labels, 0, torch.Generator())
    with pytest.raises(ValueError, match="needs the features"):
        ReplayMemory(5, "herding").update_groups(torch.zeros(3, 1), labels, labels, 0)
    with pytest.raises(ValueError, match="fills with add"):
        ReplayMemory(5).update_groups(torch.zeros(3, 1), labels, labels, 0)
    memory = ReplayMemory(5)
    memory.add(torch.zeros(3, 1), labels, labels, 0, torch.Generator(), {"logits": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match="does not grow"):
        memory.add(torch.zeros(3, 1), labels, labels, 0, torch.Generator(), {"logits": torch.zeros(3, 6)})


def test_last_of_each_group_and_sampling_among_candidates():
    memory = ReplayMemory(12, "class_balanced")
    x, y, _ = _grouped(10, [0, 1, 2])
    memory.update_groups(x, y, torch.zeros_like(y), 0, torch.Generator().manual_seed(0))
    last = memory.last_of_each_group(1)
    assert torch.bincount(memory.y_[last]).tolist() == [1, 1, 1]
    for label in (0, 1, 2):
        rows = torch.nonzero(memory.y_ == label).flatten()
        assert last[rows].tolist() == [False, False, False, True]
    candidates = torch.nonzero(~last).flatten()
    draw = memory.sample(100, torch.Generator().manual_seed(1), candidates)
    assert sorted(draw.slot.tolist()) == candidates.tolist()


def test_a_selection_of_read_samples_keeps_every_field_and_extra_aligned():
    memory = ReplayMemory(10)
    ids = torch.arange(8)
    memory.add(ids[:, None], ids % 3, ids % 2, 4, torch.Generator(), {"logits": ids[:, None].float().repeat(1, 3)})
    stored = memory.read()
    for rows in (slice(2, 5), torch.tensor([6, 0, 3])):
        part = stored.select(rows)
        expected = ids[rows]
        assert part.x.flatten().tolist() == expected.tolist() == part.slot.tolist()
        assert part.y.tolist() == (expected % 3).tolist() and part.task_id.tolist() == (expected % 2).tolist()
        assert part.experience.tolist() == [4] * len(expected)
        assert torch.equal(part.extras["logits"][:, 1], expected.float())
