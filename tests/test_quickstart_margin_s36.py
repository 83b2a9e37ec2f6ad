"""How far apart greedy generation and copying are (quickstart.evaluate.paired_wins), and what the report says
about it and about how VaViM was trained."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from test_quickstart_report import PLAN, _build
from vavam.quickstart.evaluate import paired_wins
from vavam.quickstart.report import write_quickstart_report


def test_paired_wins_counts_the_tokens_only_one_prediction_gets_right():
    truth = torch.tensor([[1, 1, 1, 1, 2, 2, 3, 3]])
    generated = torch.tensor([[1, 1, 0, 5, 2, 0, 3, 4]])  # right at 0, 1, 4, 6
    copy = torch.tensor([[1, 0, 1, 5, 0, 0, 3, 3]])  # right at 0, 2, 6, 7
    wins = paired_wins(generated, copy, truth)
    assert (wins["greedy_only"], wins["copy_only"]) == (2, 2)  # 1, 4 against 2, 7
    assert wins["sign_test_p"] == pytest.approx(1.0)


def test_the_sign_test_of_an_uneven_split_is_the_binomial_tail():
    truth = torch.zeros(1, 10, dtype=torch.long)
    generated = torch.zeros(1, 10, dtype=torch.long)
    copy = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0]])  # greedy alone right on 5, copying alone on none
    wins = paired_wins(generated, copy, truth)
    assert (wins["greedy_only"], wins["copy_only"]) == (5, 0)
    assert wins["sign_test_p"] == pytest.approx(2 * 0.5 ** 5)  # both tails of Binomial(5, 1/2)
    assert paired_wins(copy, copy, truth) == {"greedy_only": 0, "copy_only": 0, "sign_test_p": 1.0}
    with pytest.raises(ValueError, match="one shape"):
        paired_wins(generated, copy[:, :5], truth)


def test_report_gives_the_split_and_how_vavim_was_trained(tmp_path):
    out = tmp_path / "qs"
    _build(out)
    path = out / "eval" / "results.json"
    res = json.loads(path.read_text())
    res["next_frame"].update(greedy_only=52, copy_only=45, sign_test_p=0.5433)
    path.write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "greedy generation alone gets 52 tokens right, copying alone 45: two-sided sign test p = 0.54" in md
    assert (f"`vavim_mini` trained for {PLAN.video_steps} steps, with the codes of 50% of the windows relabelled"
            in md)
    assert "self-forcing" in md and "EMA" not in md  # budget 3 keeps the last weights

    plain = dataclasses.replace(PLAN, video_permute_codes=0.0, video_self_forcing=False, video_ema=0.0)
    (out / "report.md").unlink()
    write_quickstart_report(out, plain, seed=0)
    md = (out / "report.md").read_text()
    assert f"`vavim_mini` trained for {PLAN.video_steps} steps (README" in md and "self-forcing" not in md


def test_results_without_the_split_give_the_report_without_it(tmp_path):
    """Runs evaluated before the split was measured: the sentence is left out, nothing shows None."""
    out = tmp_path / "qs"
    _build(out)
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "sign test" not in md and "None" not in md
