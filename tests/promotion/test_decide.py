"""The promotion rule (domain only): the first model is promoted, a candidate at least as good
(within the tolerance) replaces production, a worse one does not and the reason says by how
much, and cards from different evaluation sets are not compared."""

from __future__ import annotations

import json

import pytest

from hoban_pipelines.promotion.decide import (
    PROMOTION_FILE, Contender, PromotionError, build_promotion, decide, read_promotion,
)


def _contender(model: str, f1: float, data: str = "split-1", version: str = "v1") -> Contender:
    return Contender(model=model, version=version, path=f"lake/{model}/{version}", card_version="card-1",
                     evaluation_data=data, f1=f1, precision=f1, recall=f1, setting="conf 0.5, NMS/IOS/0.4, no gate")


def test_the_first_model_is_promoted():
    decision = decide(_contender("model_go2k_v2", 0.5), None, tolerance=0.0)
    assert decision.promote and decision.gain is None and "first" in decision.reason


def test_a_better_or_equal_candidate_is_promoted_a_worse_one_is_not():
    production = _contender("model_go2k_v2", 0.80)
    assert decide(_contender("model_go2k_v4", 0.82), production, 0.0).promote
    assert decide(_contender("model_go2k_v4", 0.80), production, 0.0).promote
    worse = decide(_contender("model_go2k_v4", 0.75), production, 0.0)
    assert not worse.promote and worse.gain == pytest.approx(-0.05)
    assert "0.050 below production's 0.800" in worse.reason
    assert decide(_contender("model_go2k_v4", 0.78), production, tolerance=0.03).promote


def test_cards_of_different_evaluation_sets_are_not_compared():
    with pytest.raises(PromotionError, match="same go2k_split version"):
        decide(_contender("model_go2k_v4", 0.9, data="split-2"), _contender("model_go2k_v2", 0.8), 0.0)
    with pytest.raises(PromotionError, match="tolerance"):
        decide(_contender("model_go2k_v4", 0.9), None, tolerance=-0.1)


def test_a_promotion_points_at_the_checkpoint_and_records_what_it_replaced(tmp_path):
    candidate, production = _contender("model_go2k_v4", 0.82, version="v4"), _contender("model_go2k_v2", 0.8)
    report = build_promotion(candidate, production, "better", tmp_path)
    record = read_promotion(tmp_path)
    assert Contender.from_dict(record["production"]) == candidate
    assert Contender.from_dict(record["previous"]) == production and record["reason"] == "better"
    assert report.details["checkpoint"] == "lake/model_go2k_v4/v4"
    assert [row["role"] for row in report.details["contenders"].rows] == ["production", "previous"]
    assert json.loads((tmp_path / PROMOTION_FILE).read_text())["previous"]["f1"] == 0.8
