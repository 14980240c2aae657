"""MambaLM loads transformers' MambaForCausalLM and mamba-ssm's MambaLMHeadModel weights.

The oracle is transformers' own (independent) Mamba implementation on the CPU.
"""

import pytest
import torch

from eventssm import MambaLM, convert_mamba_state_dict
from tests.helpers import rel_err

transformers = pytest.importorskip("transformers")


def _hf_model(**over):
    cfg = dict(vocab_size=61, hidden_size=32, state_size=8, num_hidden_layers=3, expand=2,
               conv_kernel=4, time_step_rank=5, use_mambapy=False, use_bias=False, use_conv_bias=True)
    cfg.update(over)
    torch.manual_seed(1)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(**cfg)).eval()
    with torch.no_grad():  # move every weight away from its init so no structure hides a bug
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("over", [{}, {"use_bias": True, "conv_kernel": 3, "state_size": 4}],
                         ids=["default", "bias-k3"])
def test_logits_match_transformers(over):
    hf = _hf_model(**over)
    ours = MambaLM.from_state_dict(hf.state_dict()).eval()
    ids = torch.randint(0, 61, (2, 17))
    with torch.no_grad():
        ref = hf(ids).logits
        out = ours(ids)
    err = rel_err(out, ref)
    print("logits rel err vs transformers:", err)
    assert err < 1e-4


def test_generation_matches_transformers_greedy():
    hf = _hf_model()
    ours = MambaLM.from_state_dict(hf.state_dict()).eval()
    ids = torch.randint(0, 61, (1, 6))
    ref = hf.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    out = ours.generate(ids, max_new_tokens=8, temperature=0)
    print(ref, out)
    assert torch.equal(out, ref[:, : out.shape[1]])


def test_mamba_ssm_names_load_directly():
    """mamba-ssm's MambaLMHeadModel uses backbone.embedding (ours); transformers uses embeddings."""
    hf = _hf_model()
    sd = hf.state_dict()
    mamba_ssm_sd = convert_mamba_state_dict(sd)
    assert "backbone.embedding.weight" in mamba_ssm_sd and "backbone.embeddings.weight" not in mamba_ssm_sd
    ours = MambaLM.from_state_dict(mamba_ssm_sd)
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        assert rel_err(ours(ids), hf(ids).logits) < 1e-4


def test_mismatched_state_dict_raises():
    sd = convert_mamba_state_dict(_hf_model().state_dict())
    sd["backbone.layers.0.mixer.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected"):
        MambaLM.from_state_dict(sd)


def test_headless_backbone_loads_and_foreign_dicts_raise_clearly():
    """transformers' MambaModel (no LM head, no ``backbone.`` prefix) loads with tied embeddings;
    a dict that is not a Mamba LM's names what is missing instead of a bare KeyError."""
    hf = _hf_model()
    headless = {k[len("backbone."):]: v for k, v in hf.state_dict().items() if k.startswith("backbone.")}
    assert not any(k.startswith("backbone.") for k in headless)
    ours = MambaLM.from_state_dict(headless)
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        err = rel_err(ours(ids), hf(ids).logits)
    print("headless vs transformers logits rel err", err)
    assert err < 1e-4  # hf ties its head to the embedding, as the headless load does
    with pytest.raises(ValueError, match="missing .*backbone.embedding.weight"):
        MambaLM.from_state_dict({"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        MambaLM.from_state_dict([torch.zeros(2)])
