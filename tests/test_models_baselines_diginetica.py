"""POP, S-POP and Item-KNN on the full Diginetica test set against SR-GNN's Table 2.

Fitted on the protocol's whole training set (train ∪ valid, `select_on="test"`: these models
select nothing, and the paper fits them on all training sessions). Measured with pessimistic ties:
POP 0.93/0.21 (paper 0.89/0.20), S-POP 21.08/13.65 (21.06/13.68), Item-KNN 34.85/10.87
(35.75/11.57) P@20/MRR@20 in %. Item-KNN scores the last item's neighbours without the item
itself (with self-similarity it reaches 43.30/16.17, far from the paper, so the paper did not
recommend the last item again); the remaining ~0.9/0.7-point gap is within the 1.5-point target.
"""

from __future__ import annotations

import pytest

from sbrbench.train import train

PAPER = {"pop": (0.89, 0.20), "spop": (21.06, 13.68), "itemknn": (35.75, 11.57)}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pop", "spop", "itemknn"])
def test_baseline_matches_srgnn_table2(model: str, diginetica, tmp_path) -> None:
    rec = train(model, diginetica, results_dir=tmp_path, select_on="test", ks=(20,))
    p20, mrr20 = 100 * rec["test"]["P@20"], 100 * rec["test"]["MRR@20"]
    assert p20 == pytest.approx(PAPER[model][0], abs=1.5)
    assert mrr20 == pytest.approx(PAPER[model][1], abs=1.5)
