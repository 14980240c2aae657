"""ValueChecks: the value checks a public door gathers from the functions below it and runs."""

import pytest
import torch

from eventssm import Asymmetric, EventEncoder, Mamba
from eventssm.checks import ValueChecks
from tests.helpers import count_device_reads


def _failing_if(bad: bool, message: str):
    flag = torch.tensor(bad)

    def explain():
        if bool(flag):
            raise ValueError(message)

    return (lambda: flag), explain


def test_gathering_computes_nothing_and_running_reads_once(monkeypatch):
    computed = []
    checks = ValueChecks()
    for name in ("a", "b", "c"):
        checks.add(name, lambda n=name: computed.append(n) or torch.tensor(False), lambda: None)
    assert computed == []  # a door called with check_values=False pays for nothing
    reads = count_device_reads(monkeypatch)
    checks.run()
    print("flags computed:", computed, "reads:", reads)
    assert computed == ["a", "b", "c"]
    assert reads == ["__bool__"]
    ValueChecks().run()
    assert reads == ["__bool__"]  # no checks: no read


def test_the_first_failing_check_in_order_raises():
    checks = ValueChecks()
    for name, bad in (("a", False), ("b", True), ("c", True)):
        checks.add(name, *_failing_if(bad, f"{name} is bad"))
    assert checks.names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="^b is bad$"):
        checks.run()


def test_a_flag_its_explanation_does_not_find_is_an_error_not_a_pass():
    checks = ValueChecks()
    checks.add("a", lambda: torch.tensor(True), lambda: None)
    with pytest.raises(RuntimeError, match="bug in eventssm"):
        checks.run()


def test_a_door_names_the_first_bad_value_in_argument_order():
    """Two bad values in one call: the error names the one the door checks first (lengths before
    gaps, gaps before marks and values), as if each check read the device where it was added."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, discretization=Asymmetric("zoh"))
    tau = torch.rand(2, 5) + 0.1
    with pytest.raises(ValueError, match=r"lengths\[1\] = 7 is outside"):
        m(torch.randn(2, 5, 8), -tau, torch.tensor([5, 7]))
    with pytest.raises(ValueError, match="integration_timesteps must be >= 0"):
        m(torch.randn(2, 5, 8), -tau, torch.tensor([5, 4]))
    enc = EventEncoder(8, 1, d_input=1, num_marks=2, d_state=4)
    nan_values, bad_marks = torch.full((2, 5, 1), float("nan")), torch.full((2, 5), 9)
    with pytest.raises(ValueError, match="integration_timesteps must be finite"):
        enc(nan_values, bad_marks, integration_timesteps=torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match=r"marks must lie in \[0, 2\)"):
        enc(nan_values, bad_marks, integration_timesteps=tau)
    with pytest.raises(ValueError, match="values must be finite at real steps"):
        enc(nan_values, torch.ones(2, 5, dtype=torch.long), integration_timesteps=tau)


def test_a_bad_value_wins_over_a_later_shape_error_and_comes_alone():
    """A value checked before a shape in the code reports first, though its check runs at the
    end of the door (as if each value were read where its check was added), and its error is
    not chained to the shape error it preempted."""
    from eventssm import MambaLM, selective_scan

    torch.manual_seed(0)
    m = Mamba(8, d_state=4, discretization=Asymmetric("zoh"))
    with pytest.raises(ValueError, match=r"lengths\[1\] = 7 is outside") as e:
        m(torch.randn(2, 5, 8), torch.rand(2, 4), torch.tensor([5, 7]))  # τ of the wrong shape
    assert e.value.__suppress_context__
    u, delta, z = torch.randn(3, 2, 5, 8).unbind(0)
    A, B, C = -torch.rand(8, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="integration_timesteps must be >= 0"):
        selective_scan(u, delta, A, B, C, integration_timesteps=-torch.rand(2, 5) - 0.1,
                       discretization=Asymmetric("zoh"))  # no rate
    lm = MambaLM(10, 8, d_state=4, n_layers=2)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 10\)"):
        lm(torch.full((2, 5), 12), inference_cache=[1, 2])  # not a cache
    # with check_values=False the shape errors still come
    with pytest.raises(ValueError, match=r"integration_timesteps must have shape \(2, 5\)"):
        m(torch.randn(2, 5, 8), torch.rand(2, 4), torch.tensor([5, 7]), check_values=False)
