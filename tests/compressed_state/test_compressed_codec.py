"""The compressed-state formats in NumPy (adam_c._codec): the 8-bit dynamic map, its arithmetic encoder, bf16 rounding."""
import numpy as np
import pytest

from adam_c import _codec


def published_map(signed):
    """Dettmers et al. (2022) dynamic map, built from its definition (decades of linspace bin centres, 0 and 1)."""
    values = [0.0, 1.0]
    for d in range(7):
        f = 2 ** d if signed else 2 ** (d + 1)
        edges = np.linspace(0.1, 1.0, f + 1)
        centres = 10.0 ** (d - 6) * (edges[:-1] + edges[1:]) / 2
        values += list(centres) + (list(-centres) if signed else [])
    return np.sort(np.array(values))


@pytest.mark.parametrize("signed", [True, False])
def test_code_values_are_the_published_map(signed):
    ours = np.sort(_codec.code_values(signed).astype(np.float64))
    ref = published_map(signed)
    assert ours.size == ref.size == 256
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=0)
    assert np.unique(_codec.code_values(signed)).size == 256


@pytest.mark.parametrize("signed", [True, False])
def test_arithmetic_encoder_picks_the_nearest_value(signed):
    rng = np.random.default_rng(5)
    x = (rng.random(300_001) ** 9).astype(np.float32)  # every decade populated
    if signed:
        x *= np.where(rng.random(x.size) < 0.5, -1, 1).astype(np.float32)
    values = _codec.code_values(signed)
    x = np.concatenate([x, values, np.float32(0.999) * values]).astype(np.float32)
    codes = _codec.encode_normalized(x, signed)
    got = np.abs(_codec.decode_normalized(codes, signed) - x)
    best = np.abs(_codec.decode_normalized(_codec.nearest_code_search(x, signed), signed) - x)
    # equal error everywhere, up to float32 rounding of the switch points (ties)
    assert np.all(got <= best + 4e-9), np.flatnonzero(got > best + 4e-9)[:5]
    # every map value encodes to its own code
    back = _codec.encode_normalized(values, signed)
    assert np.array_equal(_codec.decode_normalized(back, signed), values)


def test_nonzero_v_never_rounds_to_zero_when_asked():
    x = np.array([0, 1e-12, 1e-9, 1e-7, 3e-7, 1.0], np.float32)
    plain = _codec.encode_normalized(x, False)
    kept = _codec.encode_normalized(x, False, keep_nonzero=True)
    assert np.all(plain[1:4] == 0)  # the published rule: values under half the smallest code become 0
    assert kept[0] == 0 and np.all(kept[1:] > 0)
    assert np.array_equal(kept[4:], plain[4:])


@pytest.mark.parametrize("n", [1, 255, 256, 257, 4097, 5000])
def test_blockwise_roundtrip_and_block_edges(n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-8, 0, n))).astype(np.float32)
    codes, absmax = _codec.quantize_blockwise(x, True)
    assert codes.shape == (n,) and absmax.shape == (-(-n // 256),)
    for b in range(absmax.size):
        assert absmax[b] == np.abs(x[b * 256:(b + 1) * 256]).max()
    y = _codec.dequantize(codes, absmax, True)
    blockmax = np.repeat(absmax, 256)[:n]
    # the dynamic map's error bound: half the widest bin (0.9/64/2) of the block's absmax, or 7% relative
    assert np.all(np.abs(y - x) <= np.maximum(0.00704 * blockmax, 0.0705 * np.abs(x)) + 1e-30)
    # each block's absmax element is exact when positive
    for b in range(absmax.size):
        seg = x[b * 256:(b + 1) * 256]
        i = b * 256 + int(np.argmax(np.abs(seg)))
        if x[i] > 0:
            assert y[i] == x[i]


def test_zero_and_nonfinite_blocks():
    x = np.zeros(600, np.float32)
    x[300] = np.nan
    x[520] = np.inf
    codes, absmax = _codec.quantize_blockwise(x, True)
    assert absmax[0] == 0 and np.isnan(absmax[1]) and np.isnan(absmax[2])
    y = _codec.dequantize(codes, absmax, True)
    assert np.all(y[:256] == 0)
    assert np.all(np.isnan(y[256:512])) and np.all(np.isnan(y[512:]))  # a non-finite value poisons its block


def test_bf16_round_to_nearest_even_matches_ml_dtypes():
    import ml_dtypes
    rng = np.random.default_rng(3)
    x = rng.standard_normal(200_003).astype(np.float32) * np.float32(1e3)
    u = rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x, u, np.array([0, -0.0, np.inf, -np.inf, 3.4e38, 1e-45], np.float32)])
    ours = _codec.bf16_round_bits(x)
    with np.errstate(invalid="ignore"):  # NaN inputs
        ref = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    finite = ~np.isnan(x)
    assert np.array_equal(ours[finite], ref[finite])
    assert np.all(np.isnan(_codec.bf16_bits_to_f32(ours[~finite])))


def test_bf16_stochastic_rounding_is_unbiased_reproducible_and_brackets():
    x = np.full(100_001, 1.0 + 2.0 ** -9, np.float32)  # 1/4 of the way from 1.0 to the next bf16 (1 + 2^-7)
    key = _codec.state_key(seed=7, step=3, index=0, stream=1)
    bits = _codec.bf16_stochastic_bits(x, key)
    y = _codec.bf16_bits_to_f32(bits)
    assert set(np.unique(y)) <= {np.float32(1.0), np.float32(1.0 + 2.0 ** -7)}
    frac_up = float(np.mean(y > 1.0))
    assert abs(frac_up - 0.25) < 0.01, frac_up
    assert np.array_equal(bits, _codec.bf16_stochastic_bits(x, key))
    assert not np.array_equal(bits, _codec.bf16_stochastic_bits(x, _codec.state_key(7, 4, 0, 1)))
    # element e's bits depend on e alone: a slice starting at `first` matches the whole
    assert np.array_equal(bits[1000:], _codec.bf16_stochastic_bits(x[1000:], key, first=1000))
    exact = np.array([1.0, -2.5, 0.0, np.inf], np.float32)  # representable values never move
    assert np.array_equal(_codec.bf16_stochastic_bits(exact, key), _codec.bf16_round_bits(exact))


def test_c_codec_tables_are_generated_from_this_codec():
    """src/state_codec_tables.inc.h is tools/gen_codec_tables.py's output for this adam_c/_codec.py: a change to the
    map that is not regenerated would make the C kernels and the NumPy model (checkpoints, oracle) disagree."""
    import importlib.util
    import os
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)
    spec = importlib.util.spec_from_file_location("gen_codec_tables", os.path.join(root, "tools", "gen_codec_tables.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(os.path.join(root, "src", "state_codec_tables.inc.h")) as f:
        committed = f.read()
    assert committed == gen.generate(), "src/state_codec_tables.inc.h is stale: run python tools/gen_codec_tables.py"
    assert "DO NOT EDIT" in committed.splitlines()[1]
