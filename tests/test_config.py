"""config.json parsing: every rope spelling, llama3 frequency scaling against
an independent implementation, and clear errors."""
import json

import numpy as np
import pytest

import reference as R
from llama_kernel import _C
from llama_kernel.config import PRESETS, ConfigError, ModelConfig

BASE = PRESETS["llama-3.2-1b"].to_hf_dict()


def spelled(spelling):
    d = json.loads(json.dumps(BASE))
    rs = d.pop("rope_scaling")
    theta = d.pop("rope_theta")
    if spelling == "rope_type":
        d.update(rope_theta=theta, rope_scaling=rs)
    elif spelling == "type":
        rs = dict(rs)
        rs["type"] = rs.pop("rope_type")
        d.update(rope_theta=theta, rope_scaling=rs)
    else:
        d["rope_parameters"] = dict(rs, rope_theta=theta)
    return d


def test_three_rope_spellings_agree():
    cfgs = [ModelConfig.from_dict(spelled(s)) for s in ("rope_type", "type", "rope_parameters")]
    assert cfgs[0] == cfgs[1] == cfgs[2]
    c = cfgs[0]
    assert (c.rope_type, c.rope_theta, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
            c.rope_original_max_position_embeddings) == ("llama3", 500000.0, 32.0, 1.0, 4.0, 8192)


@pytest.mark.parametrize("name", ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "tiny"])
def test_llama3_inv_freq_matches_reference(name):
    cfg = PRESETS[name]
    np.testing.assert_allclose(_C.rope_inv_freq(cfg.to_core()), R.inv_freq(cfg), rtol=1e-13)


def test_default_and_linear_rope():
    d = dict(BASE)
    d.pop("rope_scaling")
    c = ModelConfig.from_dict(d)
    assert c.rope_type == "default"
    np.testing.assert_allclose(_C.rope_inv_freq(c.to_core()), R.inv_freq(c), rtol=1e-13)
    d["rope_scaling"] = {"type": "linear", "factor": 4.0}
    c = ModelConfig.from_dict(d)
    np.testing.assert_allclose(_C.rope_inv_freq(c.to_core()), R.inv_freq(c), rtol=1e-13)
    d.pop("rope_scaling")
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": 1234.0}
    assert ModelConfig.from_dict(d).rope_theta == 1234.0


@pytest.mark.parametrize("rtype", ["yarn", "dynamic", "longrope", "su", "bogus"])
def test_unknown_rope_type_is_an_error(rtype):
    d = dict(BASE, rope_scaling={"rope_type": rtype, "factor": 2.0})
    with pytest.raises(ConfigError, match=f"rope type '{rtype}' is not supported"):
        ModelConfig.from_dict(d)


@pytest.mark.parametrize("patch,msg", [
    ({"model_type": "mistral"}, "model_type"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_size": None}, "hidden_size"),
    ({"hidden_size": "big"}, "hidden_size"),
    ({"num_hidden_layers": 1.5}, "integer"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq_factor"),
    ({"rope_scaling": {"factor": 8.0}}, "rope_type"),
    ({"rope_scaling": "llama3"}, "object"),
])
def test_bad_configs(patch, msg):
    d = dict(BASE)
    d.update(patch)
    with pytest.raises(ConfigError, match=msg):
        ModelConfig.from_dict(d)


def test_head_dim_and_kv_defaults():
    d = dict(BASE)
    d.pop("head_dim")
    d.pop("num_key_value_heads")
    c = ModelConfig.from_dict(d)
    assert c.head_dim == 64 and c.num_key_value_heads == 32


def test_core_validation_names_the_field():
    core = PRESETS["tiny"].to_core()
    core["n_kv_heads"] = 3
    with pytest.raises(ValueError, match="num_key_value_heads"):
        _C.estimate(core)
    core = PRESETS["tiny"].to_core()
    core["dim"] = 100  # not a multiple of the int4 group
    with pytest.raises(ValueError, match="hidden_size .* group size"):
        _C.estimate(core, quantization="int4")
    _C.estimate(core, quantization="none")


def test_from_file_errors(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.from_file(str(p))
    p.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        ModelConfig.from_file(str(p))
