"""The production model as an asset: a candidate replaces it only when its report card is at
least as good, decided by a blocking check that records both figures.

``production_model`` materializes only on a promotion (the first model ever, a better candidate,
or a rollback to a named earlier version); a rejected candidate leaves production as it was and
the failed check says by how much it lost.
"""

from collections.abc import Iterator

import dagster as dg

from hoban_pipelines.assets.evaluation import MODEL_PARTITIONS, report_cards
from hoban_pipelines.assets.publishing import lake_output, publish
from hoban_pipelines.assets.training import EVALUATION_DATA, PRODUCTION, RETRAINING_GROUP
from hoban_pipelines.core.lake import Lake
from hoban_pipelines.evaluation import builds
from hoban_pipelines.promotion.decide import (
    Contender, PromotionError, build_promotion, decide, read_promotion,
)
from hoban_pipelines.resources import LakeResource

CHECK = "candidate_beats_production"
CANDIDATE = "model_go2k_v4"  # what a review round retrains


class PromotionConfig(dg.Config):
    candidate: str = CANDIDATE  # the model asset whose current version is considered
    tolerance: float = 0.0  # F1 a candidate may lose against production and still be promoted
    rollback_to: str = ""  # a production_model version to restore instead (no comparison)


def contender(store: Lake, model: str, handle) -> Contender:
    """The model's current version with its report card, or an error saying to evaluate it."""
    cards = report_cards(store, {model: handle})
    if model not in cards:
        raise PromotionError(f"{model} version {handle.version} has no report card: run evaluation_job for {model}")
    card_version, card = cards[model]
    info = store.version_info("model_report_card", card_version, model)
    figures = builds.sliced_columns(card)
    return Contender(model=model, version=handle.version, path=handle.path, card_version=card_version,
                     evaluation_data=info["upstream"][EVALUATION_DATA], f1=figures["sliced_f1"],
                     precision=figures["sliced_precision"], recall=figures["sliced_recall"],
                     setting=figures["sliced_setting"])


@dg.asset(
    group_name=RETRAINING_GROUP, kinds={"pytorch"}, code_version="1", output_required=False,
    deps=[dg.AssetDep("model_report_card", partition_mapping=dg.AllPartitionMapping())],
    check_specs=[dg.AssetCheckSpec(CHECK, asset=PRODUCTION, blocking=True,
                                   description="The candidate's sliced F1 at its adopted setting is at least "
                                               "production's minus the tolerance (both on go2k valid).")],
)
def production_model(context: dg.AssetExecutionContext, lake: LakeResource, config: PromotionConfig) -> Iterator:
    """The promoted checkpoint: a version pointing at one model version, with the figures it won by."""
    store = lake.get()
    current = store.versions(PRODUCTION)
    production = Contender.from_dict(read_promotion(lake.recorded(PRODUCTION).resolve(store.home))["production"]) \
        if current else None
    if config.rollback_to:
        if config.rollback_to not in current:
            raise PromotionError(f"production_model has no version {config.rollback_to!r}; its versions: {current}")
        restored = Contender.from_dict(read_promotion(store.asset_dir(PRODUCTION) / config.rollback_to)["production"])
        reason = f"rollback to production version {config.rollback_to} ({restored.model} {restored.version}), as asked"
        context.log.warning(reason)
        yield lake_output(publish(context, lake, lambda out: build_promotion(restored, production, reason, out),
                                  params=config.model_dump(), upstream={restored.model: restored.version}))
        yield dg.AssetCheckResult(check_name=CHECK, passed=True, metadata={"decision": reason})
        return
    if config.candidate not in MODEL_PARTITIONS.get_partition_keys():
        raise PromotionError(f"candidate {config.candidate!r} is not an evaluated model: one of "
                             f"{MODEL_PARTITIONS.get_partition_keys()}")
    candidate = contender(store, config.candidate, lake.recorded(config.candidate))
    if production and (production.model, production.version) == (candidate.model, candidate.version):
        context.log.info(f"{candidate.model} {candidate.version} is already the production model")
        yield dg.AssetCheckResult(check_name=CHECK, passed=True, metadata={"decision": "already production"})
        return
    decision = decide(candidate, production, config.tolerance)
    figures = {"candidate": candidate.model, "candidate_version": candidate.version, "candidate_f1": candidate.f1,
               "production": production.model if production else "none",
               "production_f1": production.f1 if production else None,
               "gain": decision.gain, "tolerance": config.tolerance, "decision": decision.reason}
    context.log.info(f"promotion of {candidate.model}: {decision.reason}")
    if decision.promote:
        yield lake_output(publish(context, lake, lambda out: build_promotion(candidate, production, decision.reason, out),
                                  params=config.model_dump(), upstream={candidate.model: candidate.version,
                                                                        "model_report_card": candidate.card_version}))
    # a rejection is a decision, not a broken run: it warns (and production stays as it was)
    yield dg.AssetCheckResult(check_name=CHECK, passed=decision.promote, metadata=figures,
                              severity=dg.AssetCheckSeverity.ERROR if decision.promote else dg.AssetCheckSeverity.WARN)
