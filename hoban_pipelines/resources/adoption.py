"""How the evaluation adopts an inference setting: one policy shared by the gate sweep (which
merge and confidence it sweeps the gate at) and ``inference_config`` (the adopted setting)."""

import dagster as dg

from hoban_pipelines.evaluation.sweeps import Policy


class AdoptionPolicy(dg.ConfigurableResource):
    """``precision_at_recall``: the highest precision among settings whose recall is at least
    ``min_recall`` (a wrong alarm costs more than a miss on site), the best F1 when none reaches
    it; ``best_f1``: the best F1."""

    kind: str = "precision_at_recall"
    min_recall: float = 0.85

    def get(self) -> Policy:
        return Policy(self.kind, self.min_recall)
