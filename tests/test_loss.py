"""`train.loss_per_answer`: each answer span weighs the same, whatever its length."""
import pytest
import torch

from surgvqa.config import Config, ConfigError
from surgvqa.train import per_answer_loss


def _token_losses(logits, labels):
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                             reduction="none")


def test_equal_spans_give_the_plain_token_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.full((2, 7), -100)
    labels[0, 2:4] = torch.tensor([3, 4])
    labels[1, 4:6] = torch.tensor([5, 6])
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert per_answer_loss(logits, labels) == pytest.approx(plain.item(), rel=1e-6)


def test_a_long_span_counts_once_and_spans_do_not_join_across_rows():
    torch.manual_seed(1)
    logits = torch.randn(2, 8, 11)
    labels = torch.full((2, 8), -100)
    labels[0, 2:8] = torch.arange(6)   # a 6-token sentence running to the end of row 0 ...
    labels[1, 1] = 7                    # ... and a one-token answer starting row 1 (first target position)
    labels[1, 4] = 8                    # a second one-token answer in row 1
    tok = _token_losses(logits, labels)
    expected = (tok[0, 1:7].mean() + tok[1, 0] + tok[1, 3]) / 3
    assert per_answer_loss(logits, labels) == pytest.approx(expected.item(), rel=1e-6)


def test_no_labelled_token_gives_a_zero_loss_with_a_gradient():
    logits = torch.randn(1, 5, 11, requires_grad=True)
    loss = per_answer_loss(logits, torch.full((1, 5), -100))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_the_option_is_checked():
    with pytest.raises(ConfigError, match="train.loss_per_answer"):
        Config.from_params({"train": {"loss_per_answer": "yes"}})
    assert Config.from_params({"train": {"loss_per_answer": True}}).train.loss_per_answer is True
