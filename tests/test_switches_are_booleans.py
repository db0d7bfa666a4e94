"""Switches take True or False only (device: CPU): a string such as ``"false"`` or ``"no"`` is
truthy in Python and used to switch the feature on; each is refused in one line naming the part,
the switch and the value."""

from __future__ import annotations

import pytest
import torch

from lebm.callbacks import FID
from lebm.samplers import NoiseStart
from lebm.speed import RecordedIterations
from tests.models.cases import latent_ebm


@pytest.mark.parametrize("switch", ["save_best", "log_best", "kid", "score_final"])
def test_fid_refuses_a_string_for_a_switch(switch: str) -> None:
    with pytest.raises(ValueError, match=rf"^FID {switch} must be true or false, got 'false' \(str\)$"):
        FID(**{switch: "false"})
    assert getattr(FID(**{switch: False}), switch) is False


def test_a_chain_start_refuses_a_string_for_detach() -> None:
    start = NoiseStart(2)
    start.detach = "no"
    with pytest.raises(ValueError, match=r"^NoiseStart detach must be true or false, got 'no' \(str\)$"):
        start.start(3)
    start.detach = False
    assert start.start(3).shape == (3, 2)


def test_infer_refuses_a_string_for_refine() -> None:
    model = latent_ebm()
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"^infer refine must be true or false, got 'no' \(str\)$"):
        model.infer(x, refine="no")
    torch.manual_seed(0)
    start = model.infer(x, refine=False, start="noise")
    torch.manual_seed(0)
    assert torch.equal(start, model.infer(x, refine=False, start="noise"))


@pytest.mark.parametrize("switch", ["enabled", "report"])
def test_the_recorded_iterations_switch_refuses_a_string(switch: str) -> None:
    with pytest.raises(ValueError, match=rf"^RecordedIterations {switch} must be true or false, got 'no' \(str\)$"):
        RecordedIterations(**{switch: "no"})
    assert getattr(RecordedIterations(**{switch: False}), switch) is False
