"""Continual World's metrics on hand-made evaluation histories with known answers."""

import math

import numpy as np
import pytest

from lamo_ray.continual.metrics import (Evaluation, average_success, forgetting, forward_transfer, stage_auc,
                                        success_matrix)

TASKS = ("hammer", "push-wall", "faucet-close")


def run(per_stage):
    """Evaluations from ``[[{task: success}, ...] per evaluation] per stage``, steps in order."""
    out, step = [], 0
    for stage, points in enumerate(per_stage):
        for success in points:
            step += 50
            out.append(Evaluation(stage, step, success))
    return out


# stage 0 trains hammer, 1 push-wall, 2 faucet-close; two evaluations per stage
HISTORY = run([
    [{"hammer": 0.2, "push-wall": 0.0, "faucet-close": 0.0}, {"hammer": 0.8, "push-wall": 0.0, "faucet-close": 0.2}],
    [{"hammer": 0.6, "push-wall": 0.4, "faucet-close": 0.2}, {"hammer": 0.4, "push-wall": 1.0, "faucet-close": 0.2}],
    [{"hammer": 0.2, "push-wall": 0.6, "faucet-close": 0.6}, {"hammer": 0.0, "push-wall": 0.6, "faucet-close": 1.0}],
])


def test_success_matrix_is_each_tasks_success_at_each_stage_end():
    m = success_matrix(HISTORY, TASKS)
    assert m.shape == (3, 3)
    assert np.allclose(m, [[0.8, 0.4, 0.0], [0.0, 1.0, 0.6], [0.2, 0.2, 1.0]])
    # window 2: the mean of the stage's last two evaluations
    assert np.allclose(success_matrix(HISTORY, TASKS, window=2)[0], [0.5, 0.5, 0.1])
    # an unseen task can be a row too
    extra = run([[{"hammer": 1.0, "reach": 0.5}], [{"hammer": 0.5, "reach": 0.25}]])
    assert np.allclose(success_matrix(extra, ["hammer", "push"], tasks=["reach"]), [[0.5, 0.25]])


def test_average_success_and_forgetting():
    assert average_success(HISTORY, TASKS) == pytest.approx((0.0 + 0.6 + 1.0) / 3)
    f = forgetting(HISTORY, TASKS)
    assert f == pytest.approx({"hammer": 0.8, "push-wall": 0.4, "faucet-close": 0.0})


def test_forward_transfer_normalises_against_the_single_task_reference():
    assert stage_auc(HISTORY, 1, "push-wall") == pytest.approx(0.7)
    ft = forward_transfer(HISTORY, TASKS, {"hammer": 0.5, "push-wall": 0.4, "faucet-close": 1.0})
    assert ft["hammer"] == pytest.approx((0.5 - 0.5) / 0.5)
    assert ft["push-wall"] == pytest.approx((0.7 - 0.4) / 0.6)
    assert math.isnan(ft["faucet-close"])     # the reference solved it: nothing to transfer
    with pytest.raises(ValueError, match=r"reference run for \['push-wall'\]"):
        forward_transfer(HISTORY, TASKS, {"hammer": 0.5, "faucet-close": 0.2})
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        forward_transfer(HISTORY, TASKS, {"hammer": 50, "push-wall": 0.1, "faucet-close": 0.2})


def test_incomplete_histories_are_errors_naming_what_is_missing():
    with pytest.raises(ValueError, match=r"no evaluation in stage\(s\) \[2\]"):
        success_matrix(HISTORY[:4], TASKS)
    with pytest.raises(ValueError, match="'hammer' was not evaluated at the end of stage 1"):
        success_matrix(run([[{"hammer": 1.0}], [{"push-wall": 1.0}]]), ["hammer", "push-wall"])
    with pytest.raises(ValueError, match="window"):
        success_matrix(HISTORY, TASKS, window=0)
