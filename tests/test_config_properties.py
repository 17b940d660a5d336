"""Property tests (hypothesis) for config overrides and validation."""

import copy

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lamo_ray.config import ConfigError, deep_merge, parse_override, set_path, validate_trial

keys = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.text(alphabet="abcxyz", min_size=1, max_size=5))


@given(st.lists(keys, min_size=1, max_size=4), scalars)
def test_set_path_then_read_back(path, value):
    tree = {}
    set_path(tree, ".".join(path), value)
    node = tree
    for p in path:
        node = node[p]
    assert node == value


@given(st.dictionaries(keys, st.dictionaries(keys, scalars, max_size=3), max_size=3),
       st.dictionaries(keys, st.dictionaries(keys, scalars, max_size=3), max_size=3))
def test_deep_merge_keeps_base_and_applies_overrides(base, over):
    base_before, over_before = copy.deepcopy(base), copy.deepcopy(over)
    merged = deep_merge(base, over)
    for k, sub in over.items():
        for kk, v in sub.items():
            assert merged[k][kk] == v
    for k, sub in base.items():
        for kk, v in sub.items():
            if kk not in over.get(k, {}):
                assert merged[k][kk] == v
    assert base == base_before and over == over_before  # neither input is mutated
    for sub in merged.values():  # the result shares no dict with the inputs: changing it leaves them alone
        sub["__probe__"] = 1
    assert base == base_before and over == over_before


@given(st.floats(min_value=-10, max_value=10, allow_nan=False))
def test_sample_ratio_accepted_iff_in_unit_interval(ratio):
    raw = {"data": {"source": "x", "sample_ratio": ratio}}
    if 0 < ratio <= 1:
        assert validate_trial(raw).data.sample_ratio == ratio
    else:
        with pytest.raises(ConfigError, match="data.sample_ratio"):
            validate_trial(raw)


@settings(max_examples=50)
@given(st.integers(-5, 64), st.integers(1, 8))
def test_lora_rank_and_workers(rank, workers):
    raw = {"data": {"source": "x"}, "model": {"lora": {"rank": rank}},
           "train": {"num_workers": workers, "batch_size": 64}}
    ok = rank >= 1 and 64 % workers == 0
    if ok:
        cfg = validate_trial(raw)
        assert cfg.model.lora.rank == rank and cfg.train.num_workers == workers
    else:
        with pytest.raises(ConfigError):
            validate_trial(raw)


@given(keys, scalars)
def test_override_round_trips_yaml_scalars(key, value):
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    k, v = parse_override(f"{key}={text}")
    assert k == key and v == value
